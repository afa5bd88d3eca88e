/* main.c: patrol's entry point; everything else lives in libpatrol.a. */
#include "cli.h"

int main(int argc, char **argv)
{
        struct cli c;
        int r = cli_parse(argc, argv, &c);

        if (r)
                return r;
        return cli_run(&c);
}
