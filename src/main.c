/* main.c: patrol's entry point; everything else lives in libpatrol.a. */
#include "cli.h"

/* GnuTLS is loaded only because libcurl's own dependencies (librtmp,
 * libldap) need it; patrol never uses it, yet its ELF constructor would
 * initialise it at load (about 0.8 MiB, and /dev/urandom opened).  GnuTLS
 * asks a program that does not want that to define this symbol returning 1
 * (GNUTLS_SKIP_GLOBAL_INIT in gnutls.h; tlog does the same).  It is spelt out
 * here so as not to need GnuTLS's headers, and Makefile.am exports it so
 * that the dynamic linker finds it. */
int _gnutls_global_init_skip(void);
int _gnutls_global_init_skip(void)
{
        return 1;
}

int main(int argc, char **argv)
{
        struct cli c;
        int r = cli_parse(argc, argv, &c);

        if (r)
                return r;
        return cli_run(&c);
}
