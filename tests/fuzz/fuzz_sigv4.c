/* fuzz_sigv4.c: the SigV4 canonicaliser.  Input lines: flags byte + method,
 * the request target (path?query), then "Name: value" headers up to an empty
 * line; the rest is the body. */
#include "fuzz.h"
#include "secret.h"
#include "sigv4.h"

#define MAX_HEADERS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const struct sigv4_credentials cr = {
                .access_key_id = "AKIDEXAMPLE",
                .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                .session_token = "IQoJb3JpZ2luX2VjEXAMPLE",
        };
        char *s, *p, *line, *method, *path = "";
        const char *headers[MAX_HEADERS + 1];
        size_t nh = 0;
        unsigned flags;
        char *auth = NULL, *canon = NULL, *sts = NULL;
        struct sigv4_request req = { 0 };
        struct sigv4_params prm = { .region = "eu-west-1", .amz_date = "20150830T123600Z" };

        if (size < 1)
                return 0;
        fuzz_quiet();
        flags = data[0];
        s = fuzz_cstr(data + 1, size - 1);
        p = s;
        method = p;
        if ((line = strchr(p, '\n'))) {
                *line = '\0';
                path = p = line + 1;
                if ((line = strchr(p, '\n'))) {
                        *line = '\0';
                        p = line + 1;
                        while (nh < MAX_HEADERS && *p && *p != '\n' && (line = strchr(p, '\n'))) {
                                *line = '\0';
                                headers[nh++] = p;
                                p = line + 1;
                        }
                        if (*p == '\n')
                                p++;
                } else {
                        p += strlen(p);
                }
        } else {
                p += strlen(p);
        }
        headers[nh] = NULL;
        req.method = method;
        req.path = path;
        req.headers = headers;
        req.body = *p ? p : NULL;
        req.body_len = strlen(p);
        prm.service = (flags & 0x80) ? "s3" : "secretsmanager";
        prm.flags = flags & 0x7;
        if (sigv4_sign(&req, (flags & 0x40) ? &cr : &(struct sigv4_credentials){
                               .access_key_id = cr.access_key_id,
                               .secret_access_key = cr.secret_access_key }, &prm,
                       &auth, &canon, &sts) == 0) {
                if (!auth || strncmp(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/", 40) != 0)
                        abort();
                secret_free(auth);
                secret_free(canon);
                secret_free(sts);
        }
        free(s);
        return 0;
}
