// Asks an image model for a picture through the official OpenAI Node SDK's Chat Completions,
// whole and streamed, with OpenRouter's `modalities` and `image_config`, and prints what the SDK
// handed back as JSON: each answer's object, finish reason and image URLs (`message.images` of the
// whole answer, `delta.images` of the chunks).
// Usage: node chat_images.mjs <base_url> <api_key> <model> <prompt>
import OpenAI from "openai";

const [baseURL, apiKey, model, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const request = {
  model,
  messages: [{ role: "user", content: prompt }],
  modalities: ["image", "text"],
  image_config: { aspect_ratio: "16:9", image_size: "2K" },
};
const urlsOf = (images) => (images ?? []).map((image) => image.image_url.url);

const whole = await client.chat.completions.create({ ...request, messages: [{ role: "user", content: `${prompt} (whole)` }] });
const [choice] = whole.choices;

const chunks = [];
const stream = await client.chat.completions.create({
  ...request,
  messages: [{ role: "user", content: `${prompt} (streamed)` }],
  stream: true,
});
for await (const chunk of stream) {
  const [delta] = chunk.choices;
  chunks.push({
    object: chunk.object,
    id: chunk.id,
    finish_reason: delta.finish_reason,
    images: urlsOf(delta.delta.images),
    usage: chunk.usage ?? null,
  });
}

console.log(JSON.stringify({
  whole: {
    object: whole.object,
    role: choice.message.role,
    finish_reason: choice.finish_reason,
    images: urlsOf(choice.message.images),
  },
  chunks,
}));
