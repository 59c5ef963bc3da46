// The official `@anthropic-ai/sdk` as a client of LunaRoute (test_translate_sdk.py).
//
// node anthropic_client.mjs '<job JSON>'   (or the job on stdin; see common.mjs)
// job.mode:
//   "create"  client.messages.create(request)                           (non-streaming)
//   "stream"  client.messages.stream(request): the SDK's MessageStream, its 'text' /
//             'inputJson' / 'streamEvent' events and finalMessage() (the SDK accumulates
//             the content blocks and parses tool_use input from the input_json_delta pieces)
//   "stream_raw" client.messages.create({...request, stream: true}) iterated: raw events
// Prints {"ok": true, "message": <summary>, ...}: content blocks, joined text, tool uses with
// the input the SDK parsed, stop_reason, usage, id, model.

import Anthropic from '@anthropic-ai/sdk';
import { main } from './common.mjs';

function summarize(m) {
  const content = m.content ?? [];
  return {
    id: m.id,
    type: m.type,
    role: m.role,
    model: m.model,
    content,
    block_types: content.map((b) => b.type),
    text: content.filter((b) => b.type === 'text').map((b) => b.text).join(''),
    tool_uses: content.filter((b) => b.type === 'tool_use')
      .map((b) => ({ id: b.id, name: b.name, input: b.input })),
    stop_reason: m.stop_reason ?? null,
    stop_sequence: m.stop_sequence ?? null,
    usage: m.usage ?? null,
  };
}

await main(async (job) => {
  const client = new Anthropic({ apiKey: job.api_key ?? 'sk-ant-client-key',
                                 baseURL: job.base_url, maxRetries: 0,
                                 timeout: job.timeout_ms });
  const mode = job.mode ?? 'create';
  if (mode === 'create') {
    const m = await client.messages.create({ ...job.request, stream: false });
    return { mode, message: summarize(m) };
  }
  if (mode === 'stream') {
    const s = client.messages.stream(job.request);
    const events = [];
    const textDeltas = [];
    const jsonDeltas = [];
    s.on('streamEvent', (ev) => events.push(ev.type));
    s.on('text', (d) => textDeltas.push(d));
    s.on('inputJson', (partial) => jsonDeltas.push(partial));
    const m = await s.finalMessage();
    return { mode, message: summarize(m), events, text_deltas: textDeltas,
             json_deltas: jsonDeltas };
  }
  if (mode === 'stream_raw') {
    const s = await client.messages.create({ ...job.request, stream: true });
    const events = [];
    for await (const ev of s) events.push(ev);
    return { mode, events };
  }
  throw new Error(`unknown mode ${mode}`);
});
