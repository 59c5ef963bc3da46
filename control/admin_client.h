/* Clients for the local unix-socket APIs `lunaroute-control` talks to: the agent's admin API
 * (HTTP/1.1 + JSON; the response is parsed with llhttp) and HAProxy's runtime API (one text
 * command, answer read until the socket closes). Blocking, bounded by a timeout, one request
 * per connection. Helpers report errors into the caller's buffer and never log. */
#ifndef LR_ADMIN_CLIENT_H
#define LR_ADMIN_CLIENT_H

#include <stddef.h>

#define ADMIN_CLIENT_TIMEOUT_SECS 5.0
#define ADMIN_CLIENT_MAX_RESPONSE (4u * 1024u * 1024u)

enum admin_client_result {
    ADMIN_CLIENT_OK = 0,
    ADMIN_CLIENT_UNREACHABLE = -1, /* no socket, nobody listening, or I/O failure */
    ADMIN_CLIENT_BAD_RESPONSE = -2 /* answered, but not with a complete HTTP response */
};

struct admin_response {
    int status;
    char *body; /* NUL-terminated, malloc'd */
    size_t body_len;
};

/* One request to the HTTP server on socket_path. json_body may be NULL (no body). */
int admin_client_request(const char *socket_path, const char *method, const char *path,
                         const char *json_body, double timeout_secs, struct admin_response *out,
                         char *err, size_t errlen);
void admin_response_free(struct admin_response *r);

/* The agent's admin socket, from <run_dir>/agent.json ("admin_socket"). 0, or -1 with a
 * message. */
int admin_client_socket_path(const char *run_dir, char *out, size_t len, char *err, size_t errlen);

/* Sends "cmd\n" to HAProxy's runtime API or master CLI, half-closes, and reads the answer
 * until HAProxy closes the connection. *out is malloc'd and NUL-terminated. 0, or an
 * admin_client_result. */
int haproxy_cli_command(const char *socket_path, const char *cmd, double timeout_secs, char **out,
                        char *err, size_t errlen);

#endif
