// Makes one generation through the official OpenAI Node SDK and prints what it saw as JSON:
// the SDK's request ids (from `withResponse()` and from the parsed result) and the header.
// Usage: node request_id.mjs <base_url> <api_key> <prompt>
import OpenAI from "openai";

const [baseURL, apiKey, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const { data, response, request_id } = await client.images
  .generate({ model: "placeholder", prompt, size: "16x16" })
  .withResponse();
const again = await client.images.generate({ model: "placeholder", prompt: `${prompt} again`, size: "16x16" });
let errorRequestId = null;
try {
  await client.images.generate({ model: "no-such-model", prompt });
} catch (error) {
  errorRequestId = error.requestID ?? null;
}
console.log(JSON.stringify({
  request_id,
  header: response.headers.get("x-request-id"),
  images: data.data.length,
  parsed_request_id: again._request_id,
  error_request_id: errorRequestId,
}));
