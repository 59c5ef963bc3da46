/* `lunaroute-control status`: one JSON document about a running stack, from the run
 * directory alone: the agent's admin API (GET /v1/status), HAProxy's runtime API on
 * <run_dir>/haproxy.sock (`show info`, `show stat`,
 * `show servers state`), and control's own files (control.pid,
 * the rendered files' SHA-256). Never includes a secret: no key values, no environment
 * values (the config path is the only thing read from the supervisor's command line or
 * environment). The fields are documented in STATUS_FIELDS_HELP. */
#ifndef LR_STATUS_H
#define LR_STATUS_H

#include <jansson.h>

/* Collects the document into *out (new reference). Returns 0 when the agent and HAProxy
 * both answered, 1 when either did not (the document says why), -1 on allocation failure. */
int status_collect(const char *run_dir, json_t **out);

/* Parses `show stat` CSV into {"backends": {...}, "frontends": {...}} (see the help). */
json_t *status_parse_show_stat(const char *csv);
/* Parses `show servers state` (format 1) into {"<backend>": {"<server>": {...}}} with the
 * enumerations and masks spelled out (see the help). Unknown format: {}. */
json_t *status_parse_servers_state(const char *text);
/* Parses `show info` ("Key: value" lines) into an object of the fields status reports. */
json_t *status_parse_show_info(const char *text);

extern const char status_fields_help[];

#endif
