-- wrk's requests for tests/bench/gateway.sh: `POST /v1/images/generations` of one 1024x1024
-- image. Arguments (after `--`): mode (`miss`: every request a prompt never sent before, so that
-- no cache can answer; `hit`: always the same prompt), model, response_format, and an optional
-- bearer token.

local threads = 0

-- Runs in wrk's main state, once per thread: numbers the threads so that their prompts differ.
function setup(thread)
    threads = threads + 1
    thread:set("thread_number", threads)
end

local mode, model, response_format
local sent = 0

function init(args)
    mode, model, response_format = args[1], args[2], args[3]
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    if args[4] and args[4] ~= "" then
        wrk.headers["Authorization"] = "Bearer " .. args[4]
    end
end

function request()
    local prompt = "a lighthouse at dusk"
    if mode == "miss" then
        sent = sent + 1
        prompt = string.format("a lighthouse at dusk, take %d.%d", thread_number, sent)
    end
    local body = string.format(
        '{"model":"%s","prompt":"%s","size":"1024x1024","quality":"low","response_format":"%s"}',
        model, prompt, response_format)
    return wrk.format(nil, nil, nil, body)
end
