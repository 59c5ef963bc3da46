/* Dialect translation between the OpenAI Chat Completions API and the Anthropic Messages API
 * (DESIGN §8: a rule may send a request to a provider of the other dialect).
 *
 * Pure functions over jansson values: no I/O, no clock (the caller passes `created`), no
 * globals. Inputs are never modified. Every field of the source that has no counterpart in
 * the target is dropped and reported through `drop` (a static string naming it, e.g.
 * "frequency_penalty" or "messages.content.input_audio"), never silently mistranslated; the
 * caller counts these in lunaroute_translation_dropped_fields_total. Drops are reported
 * only when the call succeeds.
 *
 * Mapping (requests):
 *   OpenAI -> Anthropic
 *     system/developer messages      -> "system" (text joined with "\n\n")
 *     user/assistant text            -> text blocks (a plain string stays a string)
 *     image_url (data: URL / URL)    -> image block, source base64 (media_type) / url
 *     assistant tool_calls           -> tool_use blocks (arguments parsed as JSON)
 *     role "tool" messages           -> a user turn of tool_result blocks (consecutive
 *                                       ones merged; same-role turns merged)
 *     tools / tool_choice            -> tools {name,description,input_schema} /
 *                                       auto|none|required->any|function->tool
 *     parallel_tool_calls: false     -> tool_choice.disable_parallel_tool_use
 *     stop (string|array)            -> stop_sequences
 *     max_completion_tokens|max_tokens -> max_tokens (else opts->default_max_tokens)
 *     temperature                    -> clamped to [0, 1]
 *     top_p, stream                  -> same
 *     user                           -> metadata.user_id
 *     stream_options                 -> dropped silently (Anthropic streams always carry
 *                                       usage; the stream translator honours include_usage)
 *   Anthropic -> OpenAI: the reverse (system first; tool_result blocks -> role "tool"
 *     messages before the rest of that user turn; tool_use -> tool_calls with arguments
 *     serialised; metadata.user_id -> user; max_tokens -> max_tokens; stream -> stream +
 *     stream_options.include_usage so usage can be reported).
 * Responses: content, tool calls, finish_reason <-> stop_reason, usage (prompt/completion
 * <-> input/output tokens), ids and model names. Errors: the body of one dialect's error in
 * the other's shape, status mapped where the dialects differ (Anthropic 529 overloaded ->
 * 503 for OpenAI clients). */
#ifndef LR_TRANSLATE_H
#define LR_TRANSLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buf.h"

enum tr_dialect { TR_OPENAI = 0, TR_ANTHROPIC = 1 }; /* same values as router_dialect */

#define TR_DEFAULT_MAX_TOKENS 4096

struct tr_opts {
    unsigned default_max_tokens; /* OpenAI -> Anthropic when the request has none; 0: the
                                    built-in TR_DEFAULT_MAX_TOKENS */
};

/* Reports one dropped field (a static string). May be NULL. */
typedef void (*tr_drop_fn)(void *ud, const char *field);

/* Request translation. Returns a new object, or NULL with a client-facing message in err
 * when the request cannot be expressed in the target dialect (not an object, "messages"
 * missing or not an array, a message that is not an object, ...): the caller answers 400. */
json_t *tr_request(enum tr_dialect from, enum tr_dialect to, const json_t *req,
                   const struct tr_opts *opts, tr_drop_fn drop, void *ud, char *err, size_t errlen);

/* Successful (2xx) non-streaming response translation. `created` is the Unix time put in an
 * OpenAI response's "created" (OpenAI -> Anthropic ignores it). NULL when resp is not a
 * response of the source dialect (the caller answers 502). */
json_t *tr_response(enum tr_dialect from, enum tr_dialect to, const json_t *resp, int64_t created,
                    tr_drop_fn drop, void *ud);

/* Error translation: `body` is the upstream's parsed error body (NULL or any JSON when it was
 * not JSON: the message then says so with the status). Returns the body in the `to`
 * dialect (never NULL unless out of memory) and sets *status_out (same as status except
 * Anthropic 529 -> 503 for OpenAI clients). */
json_t *tr_error(enum tr_dialect from, enum tr_dialect to, int status, const json_t *body,
                 int *status_out);

/* Streaming translation, event by event, no buffering of the stream. The caller splits the
 * upstream text/event-stream into events (sse.c) and feeds each one; translated events are
 * appended to out, complete ("event: ...\ndata: ...\n\n" for Anthropic, "data: ...\n\n" for
 * OpenAI), so out is always at an event boundary.
 *
 *   Anthropic -> OpenAI: message_start -> a chunk with role "assistant"; text_delta ->
 *     delta.content; tool_use block start -> delta.tool_calls[{index,id,type,function
 *     {name,arguments:""}}]; input_json_delta -> delta.tool_calls[{index,function
 *     {arguments}}]; message_delta -> a chunk with finish_reason; message_stop -> (the usage
 *     chunk with "choices":[] when include_usage) + "data: [DONE]"; ping dropped; thinking
 *     deltas dropped (reported); error -> an OpenAI error event.
 *   OpenAI -> Anthropic: the first chunk -> message_start; content -> content_block_start
 *     (text) + content_block_delta text_delta; tool_calls -> the open block stopped,
 *     content_block_start (tool_use) + input_json_delta; finish_reason -> the open block
 *     stopped (message_delta is held until the usage chunk or [DONE] so it carries
 *     output_tokens); [DONE] -> message_delta (if not sent) + message_stop; a data object
 *     with "error" -> an Anthropic error event.
 * Chunk ids/model: Anthropic's message id and model are reused in every OpenAI chunk;
 * OpenAI's chunk id and model in message_start. */
struct tr_stream;

/* from = the upstream's dialect; the client's is the other one. model: used when the
 * upstream does not name one (may be NULL). include_usage: Anthropic -> OpenAI only, the
 * client's stream_options.include_usage. created: as for tr_response. NULL on ENOMEM. */
struct tr_stream *tr_stream_new(enum tr_dialect from, const char *model, bool include_usage,
                                int64_t created);
void tr_stream_free(struct tr_stream *s); /* NULL-safe */

/* Feeds one upstream event: `event` is its "event:" value (NULL/0 when none), `data` its
 * joined data lines (NULL/0 when none). Comments and events without data produce nothing.
 * Returns 0, -1 when the event is not valid for the upstream dialect (data not JSON where
 * JSON is required): nothing is appended, every later feed returns the same error, and the
 * caller ends the stream with its own error event. -ENOMEM on allocation failure (jansson
 * may report a failed allocation while parsing as -1). */
int tr_stream_feed(struct tr_stream *s, const char *event, size_t event_len, const char *data,
                   size_t data_len, tr_drop_fn drop, void *ud, struct lr_buf *out);

/* True once the client's stream has been ended properly ([DONE] / message_stop sent). */
bool tr_stream_done(const struct tr_stream *s);
/* True when an error event was translated (the upstream reported an error). */
bool tr_stream_errored(const struct tr_stream *s);

#endif
