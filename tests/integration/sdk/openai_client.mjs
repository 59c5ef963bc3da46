// The official `openai` SDK as a client of LunaRoute (test_translate_sdk.py).
//
// node openai_client.mjs '<job JSON>'   (or the job on stdin; see common.mjs)
// job.mode:
//   "create"        client.chat.completions.create(request)            (non-streaming)
//   "stream"        client.chat.completions.create({...request, stream: true}) iterated
//                   chunk by chunk and accumulated here (every chunk is also returned)
//   "stream_helper" client.beta.chat.completions.stream(request) with its events and
//                   finalChatCompletion() (the SDK's own accumulation and checks)
// Prints {"ok": true, "completion": <summary>, ...}: the SDK's parsed result, tool call
// arguments JSON.parse'd ("parsed_arguments"), finish_reason, usage, id, model.

import OpenAI from 'openai';
import { main } from './common.mjs';

function summarize(c) {
  const choice = c.choices?.[0] ?? {};
  const msg = choice.message ?? {};
  return {
    id: c.id,
    object: c.object,
    created: c.created,
    model: c.model,
    n_choices: c.choices?.length ?? 0,
    role: msg.role ?? null,
    content: msg.content ?? null,
    refusal: msg.refusal ?? null,
    finish_reason: choice.finish_reason ?? null,
    tool_calls: (msg.tool_calls ?? []).map((tc) => ({
      id: tc.id,
      type: tc.type,
      name: tc.function?.name,
      arguments: tc.function?.arguments,
      // JSON.parse throws on malformed arguments: the client then fails, as an app would.
      parsed_arguments: JSON.parse(tc.function?.arguments ?? 'null'),
    })),
    usage: c.usage ?? null,
  };
}

// Accumulates raw chunks the way an application iterating the stream does, checking the
// wire protocol on the way (violations are reported, the test asserts there are none).
function accumulate(chunks) {
  const problems = [];
  const out = { id: null, object: 'chat.completion', created: null, model: null, usage: null,
                choices: [{ index: 0, message: { role: null, content: null, tool_calls: [] },
                            finish_reason: null }] };
  const msg = out.choices[0].message;
  const ids = new Set();
  chunks.forEach((ch, i) => {
    if (ch.object !== 'chat.completion.chunk') problems.push(`chunk ${i}: object ${ch.object}`);
    ids.add(ch.id);
    out.id ??= ch.id;
    out.created ??= ch.created;
    out.model ??= ch.model;
    if (ch.usage) {
      if (ch.choices?.length) problems.push(`chunk ${i}: usage chunk with choices`);
      out.usage = ch.usage;
    }
    if (!Array.isArray(ch.choices)) {
      problems.push(`chunk ${i}: choices is not an array`);
      return;
    }
    if (ch.choices.length === 0 && !ch.usage) problems.push(`chunk ${i}: no choices, no usage`);
    for (const c of ch.choices) {
      if (c.index !== 0) problems.push(`chunk ${i}: choice index ${c.index}`);
      if (out.choices[0].finish_reason && (c.delta?.content || c.delta?.tool_calls)) {
        problems.push(`chunk ${i}: delta after finish_reason`);
      }
      const d = c.delta ?? {};
      if (d.role) {
        if (msg.role) problems.push(`chunk ${i}: role sent twice`);
        msg.role = d.role;
      }
      if (typeof d.content === 'string' && d.content !== '') {
        msg.content = (msg.content ?? '') + d.content;
      }
      for (const t of d.tool_calls ?? []) {
        if (!Number.isInteger(t.index)) problems.push(`chunk ${i}: tool call without index`);
        let slot = msg.tool_calls[t.index];
        if (!slot) {
          if (!t.id || !t.function?.name) {
            problems.push(`chunk ${i}: first delta of tool call ${t.index} lacks id/name`);
          }
          if (t.index !== msg.tool_calls.length) {
            problems.push(`chunk ${i}: tool call index ${t.index} skips`);
          }
          slot = msg.tool_calls[t.index] = { id: t.id, type: t.type ?? 'function',
                                             function: { name: t.function?.name ?? '',
                                                         arguments: '' } };
        } else if (t.id && t.id !== slot.id) {
          problems.push(`chunk ${i}: tool call ${t.index} changed id`);
        }
        slot.function.arguments += t.function?.arguments ?? '';
      }
      if (c.finish_reason) out.choices[0].finish_reason = c.finish_reason;
    }
  });
  if (msg.tool_calls.length === 0) delete msg.tool_calls;
  if (ids.size !== 1) problems.push(`chunk ids differ: ${[...ids].join(',')}`);
  return { completion: out, problems };
}

await main(async (job) => {
  const client = new OpenAI({ apiKey: job.api_key ?? 'sk-client-key', baseURL: job.base_url,
                              maxRetries: 0, timeout: job.timeout_ms });
  const mode = job.mode ?? 'create';
  if (mode === 'create') {
    const c = await client.chat.completions.create({ ...job.request, stream: false });
    return { mode, completion: summarize(c) };
  }
  if (mode === 'stream') {
    const s = await client.chat.completions.create({ ...job.request, stream: true });
    const chunks = [];
    for await (const ch of s) chunks.push(ch);
    const { completion, problems } = accumulate(chunks);
    return { mode, completion: summarize(completion), chunks, problems,
             content_deltas: chunks.flatMap((ch) => (ch.choices ?? [])
               .map((c) => c.delta?.content).filter((x) => typeof x === 'string' && x)) };
  }
  if (mode === 'stream_helper') {
    const s = client.beta.chat.completions.stream({ ...job.request, stream: true });
    const contentDeltas = [];
    const argsDone = [];
    let chunks = 0;
    s.on('chunk', () => { chunks += 1; });
    s.on('content', (delta) => contentDeltas.push(delta));
    s.on('tool_calls.function.arguments.done',
         (ev) => argsDone.push({ index: ev.index, name: ev.name, arguments: ev.arguments }));
    const final = await s.finalChatCompletion();
    return { mode, completion: summarize(final), content_deltas: contentDeltas,
             arguments_done: argsDone, n_chunks: chunks };
  }
  throw new Error(`unknown mode ${mode}`);
});
