/* floor.c: the bench's floor.  COUNT bare HTTPS requests per URL, spread over
 * PARALLEL threads, each with one curl easy handle so connections and TLS
 * sessions are kept alive, as a perfect client would.  Prints the wall time.
 *
 *   floor CA_FILE PARALLEL URL COUNT [URL COUNT ...]
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct job {
        const char *ca;
        const char **items;     /* one URL per request, interleaved */
        size_t n;
        atomic_size_t next;
        atomic_size_t failed;
};

static size_t discard(char *p, size_t s, size_t n, void *u)
{
        (void)p; (void)u;
        return s * n;
}

static void *worker(void *arg)
{
        struct job *j = arg;
        CURL *h = curl_easy_init();
        size_t i;

        if (!h)
                return NULL;
        curl_easy_setopt(h, CURLOPT_CAINFO, j->ca);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(h, CURLOPT_MAXCONNECTS, 16L);
        while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
                long status = 0;
                curl_easy_setopt(h, CURLOPT_URL, j->items[i]);
                if (curl_easy_perform(h) != CURLE_OK ||
                    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200)
                        atomic_fetch_add(&j->failed, 1);
        }
        curl_easy_cleanup(h);
        return NULL;
}

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
        struct job j = { 0 };
        size_t total = 0, k, left, nurl = (size_t)(argc - 3) / 2;
        size_t *count;
        pthread_t *t;
        long par;
        double t0;

        if (argc < 5 || (argc - 3) % 2) {
                fprintf(stderr, "usage: floor CA_FILE PARALLEL URL COUNT [URL COUNT ...]\n");
                return 64;
        }
        j.ca = argv[1];
        par = atol(argv[2]);
        count = calloc(nurl, sizeof(*count));
        for (k = 0; k < nurl; k++)
                total += count[k] = strtoul(argv[4 + 2 * k], NULL, 10);
        j.items = calloc(total + 1, sizeof(*j.items));
        /* Interleave the hosts as a rotation does. */
        for (left = total; left > 0;)
                for (k = 0; k < nurl; k++)
                        if (count[k]) {
                                count[k]--;
                                j.items[j.n++] = argv[3 + 2 * k];
                                left--;
                        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        t = calloc((size_t)par, sizeof(*t));
        t0 = now_s();
        for (k = 0; k < (size_t)par; k++)
                pthread_create(&t[k], NULL, worker, &j);
        for (k = 0; k < (size_t)par; k++)
                pthread_join(t[k], NULL);
        printf("%zu requests, %ld parallel: %.3f s, %zu failed\n", j.n, par, now_s() - t0,
               (size_t)atomic_load(&j.failed));
        return atomic_load(&j.failed) ? 1 : 0;
}
