/* GET /v1/models: the merged model lists of the enabled providers of the served dialects.
 * Each provider is asked (GET base_url/v1/models, same credential rules as the proxy) in
 * parallel; the answers are merged (first provider wins on a duplicate id) and converted to
 * the client's shape: OpenAI {"object":"list","data":[{id,object,created,owned_by}]} by
 * default, Anthropic {"data":[{type,id,display_name,created_at}],"has_more":false,
 * "first_id","last_id"} when the client sent anthropic-version. Providers that fail are
 * skipped; all failing gives 502 JSON. The merged result is cached per thread for
 * MODELS_CACHE_SECS, per shape, and only when every provider asked used a configured key (a
 * list fetched with one client's credentials is never served to another client). */
#ifndef LR_MODELS_H
#define LR_MODELS_H

#include <stddef.h>

#include <jansson.h>

#include "engine_http.h"

#define MODELS_CACHE_SECS 60.0
#define MODELS_MAX_BODY   (4u * 1024u * 1024u) /* per provider answer */

struct proxy_ctx;
struct models_cache;

struct models_cache *models_cache_new(void);
void models_cache_free(struct models_cache *m); /* NULL-safe */

void models_handle(struct proxy_ctx *px, struct engine_conn *c,
                   const struct engine_http_request *req);

/* Pure: appends the entries of one provider's answer (either shape) to `data` in the
 * requested shape (anthropic != 0: Anthropic), skipping ids already in `seen` (an object
 * used as a set). owned_by defaults to the provider name. Returns the number added, or -1
 * when the answer is not a model list. */
int models_merge(json_t *data, json_t *seen, const char *body, size_t len, int anthropic,
                 const char *provider);
/* Pure: the final document for data in the shape. New reference. */
json_t *models_document(json_t *data, int anthropic);

#endif
