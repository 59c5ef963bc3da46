// Shared by openai_client.mjs and anthropic_client.mjs: read the job, refuse anything but
// loopback, print the result or the SDK's error as one JSON document on stdout.
//
// Job (JSON, argv[2] or stdin):
//   {"base_url": "http://127.0.0.1:PORT[/v1]", "api_key": "...", "mode": "...",
//    "request": {...SDK params...}, "timeout_ms": 15000}
//   or, for several calls in one process, "calls": [{"mode": ..., "request": {...}}, ...]
//   instead of mode/request (timeout_ms then bounds each call; the watchdog all of them).
// Exit status: 0 result printed; 1 SDK/API error (printed as {"ok": false, "error": ...});
// 2 bad job; 3 watchdog (the SDK did not finish in time).

import process from 'node:process';

export async function readJob() {
  let text = process.argv[2];
  if (text === undefined) {
    const parts = [];
    for await (const c of process.stdin) parts.push(c);
    text = Buffer.concat(parts).toString('utf8');
  }
  let job;
  try {
    job = JSON.parse(text);
  } catch (e) {
    fail(2, { kind: 'bad_job', message: `job is not JSON: ${e.message}` });
  }
  const calls = job && Array.isArray(job.calls) ? job.calls : [job];
  if (!job || typeof job !== 'object' || typeof job.base_url !== 'string' ||
      !calls.every((c) => c && typeof c.request === 'object' && c.request !== null)) {
    fail(2, { kind: 'bad_job',
              message: 'job needs base_url (string) and request (object) or calls' });
  }
  let url;
  try {
    url = new URL(job.base_url);
  } catch (e) {
    fail(2, { kind: 'bad_job', message: `base_url: ${e.message}` });
  }
  // The tests never leave the machine: only loopback addresses are accepted.
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) || url.protocol !== 'http:') {
    fail(2, { kind: 'bad_job',
              message: `base_url must be http://127.0.0.1:PORT, got ${job.base_url}` });
  }
  const timeoutMs = Number.isInteger(job.timeout_ms) ? job.timeout_ms : 15000;
  // Watchdog beyond the SDK's own timeout: a hang is reported, never waited out forever.
  const limit = timeoutMs * calls.length + 2000;
  setTimeout(() => fail(3, { kind: 'watchdog', message: `no result after ${limit} ms` }),
             limit).unref();
  return { ...job, timeout_ms: timeoutMs };
}

export function emit(obj) {
  process.stdout.write(JSON.stringify({ ok: true, ...obj }) + '\n');
  process.exitCode = 0;
}

export function fail(code, error) {
  process.stdout.write(JSON.stringify({ ok: false, error }) + '\n');
  process.stderr.write(`sdk client error: ${JSON.stringify(error)}\n`);
  process.exit(code);
}

// An SDK exception as JSON: class name, HTTP status, parsed error body, message.
export function sdkError(e) {
  return {
    kind: 'sdk',
    name: e?.constructor?.name ?? typeof e,
    status: e?.status ?? null,
    message: String(e?.message ?? e),
    body: e?.error ?? null,
    stack: e?.stack ? String(e.stack).split('\n').slice(0, 6).join('\n') : null,
  };
}

// A job with "calls": [{mode, request}, ...] runs them one after the other in this process
// (one node start-up for several SDK calls) and prints {"ok": true, "results": [...]}; the
// first failing call ends it with {"ok": false, "error": {..., "call": index}}.
export async function main(run) {
  const job = await readJob();
  if (Array.isArray(job.calls)) {
    const results = [];
    for (const [i, c] of job.calls.entries()) {
      try {
        results.push(await run({ ...job, ...c }));
      } catch (e) {
        fail(1, { ...sdkError(e), call: i });
      }
    }
    emit({ results });
    return;
  }
  try {
    emit(await run(job));
  } catch (e) {
    fail(1, sdkError(e));
  }
}
