/* test_config.c: the configuration contract (SPEC.md section 2): what loads,
 * what it loads to, and one `FILE:LINE: what` error for each rejection. */
#include "autoconfig.h"

#include "test_util.h"

#include "config.h"

/* Scratch folder for the configurations and their credential files. */
static char *dir;
static struct capture cap;

/* ---- building blocks for the configurations below ---- */

#define ACCT "accounts = ( { name = \"svc\"; org = \"org_a\"; client_id = \"cli_1\"; " \
        "client_secret_file = \"svc.secret\"; } );\n"
#define VAULT "  { name = \"vault\"; type = \"vault\"; url = \"https://vault.example:8200\"; " \
        "auth = { method = \"token\"; token_file = \"vault.token\"; }; }\n"
#define AWS "  { name = \"aws\"; type = \"aws\"; region = \"eu-west-1\"; auth = { method = \"default\"; }; }\n"
#define AZURE "  { name = \"azure\"; type = \"azure\"; url = \"https://kv.vault.azure.net\"; " \
        "auth = { method = \"managed_identity\"; }; }\n"
#define STORES(body) "stores = (\n" body ");\n"
#define BASE ACCT STORES(VAULT)
#define INTEG_S(store, body) "integrations = ( { name = \"i1\"; account = \"svc\"; store = \"" store "\";\n" \
        body "} );\n"
#define INTEG(body) INTEG_S("vault", body)
/* The integration's own line is the one to blame. */
#define INTEG_AT(body) "integrations = ( { name = \"i1\"; account = \"svc\"; store = \"vault\"; #<\n" \
        body "} );\n"
#define SCOPES "  scopes = [ \"projects.read\" ];\n"
#define SECRET "  secret = \"onplana/i1\";\n"
#define GOOD BASE INTEG(SCOPES SECRET)
#define VAULT_AUTH(auth) ACCT "stores = ( { name = \"vault\"; type = \"vault\"; url = \"https://v.example\";\n" \
        auth "} );\n"
#define A16 "aaaaaaaaaaaaaaaa"
#define A64 A16 A16 A16 A16

/* A rejected configuration: the line marked `#<` must be blamed, with `want`
 * in the message. */
struct bad {
        const char *name;
        const char *text;
        const char *want;
        bool check_files;
};

static const struct bad bad_cases[] = {
        /* libconfig syntax */
        { "syntax error", "max_parallel = 8;\nstate_dir = = \"/x\"; #<\n", "syntax error", false },
        { "syntax error missing equals", "policy = {\n  ttl = \"1d\";\n  renew_before \"1h\"; #<\n};\n",
          "syntax error", false },
        /* unknown keys, at every level */
        { "unknown top-level key", GOOD "max_paralel = 4; #<\n",
          "unknown key \"max_paralel\"; did you mean \"max_parallel\"?", false },
        { "unknown policy key", "policy = {\n  ttl = \"30d\";\n  renew_befor = \"7d\"; #<\n};\n",
          "policy: unknown key \"renew_befor\"; did you mean \"renew_before\"?", false },
        { "unknown onplana key", "onplana = {\n  cafile = \"/etc/ca.pem\"; #<\n};\n",
          "unknown key \"cafile\"; did you mean \"ca_file\"?", false },
        { "unknown account key", "accounts = ( { name = \"svc\"; org = \"org_a\"; client_id = \"c\"; "
          "client_secret_file = \"svc.secret\";\n  orgg = \"x\"; #<\n} );\n",
          "account \"svc\": unknown key \"orgg\"; did you mean \"org\"?", false },
        { "unknown store key", ACCT "stores = ( { name = \"vault\"; type = \"vault\"; url = \"https://v.example\";\n"
          "  mout = \"kv\"; #<\n  auth = { method = \"token\"; token_file = \"vault.token\"; }; } );\n",
          "store \"vault\": unknown key \"mout\"; did you mean \"mount\"?", false },
        { "unknown auth key", VAULT_AUTH("  auth = { method = \"approle\"; role_id = \"r\"; "
          "secret_id_file = \"approle.secret\";\n    mont = \"ar\"; #<\n  };\n"),
          "auth: unknown key \"mont\"; did you mean \"mount\"?", false },
        { "aws key in a vault store", ACCT "stores = ( { name = \"vault\"; type = \"vault\"; url = \"https://v.example\";\n"
          "  region = \"eu-west-1\"; #<\n  auth = { method = \"token\"; token_file = \"vault.token\"; }; } );\n",
          "unknown key \"region\"", false },
        { "approle key with token method", VAULT_AUTH("  auth = { method = \"token\"; token_file = \"vault.token\";\n"
          "    role_id = \"r\"; #<\n  };\n"), "auth: unknown key \"role_id\"", false },
        { "unknown integration key", BASE INTEG(SCOPES SECRET "  tll = \"30d\"; #<\n"),
          "integration \"i1\": unknown key \"tll\"; did you mean \"ttl\"?", false },
        /* missing keys */
        { "missing account org", "accounts = (\n  { name = \"svc\"; client_id = \"c\"; client_secret_file = \"svc.secret\"; } #<\n);\n",
          "account \"svc\": missing key \"org\"", false },
        { "missing account name", "accounts = (\n  { org = \"o\"; client_id = \"c\"; client_secret_file = \"svc.secret\"; } #<\n);\n",
          "account #1: missing key \"name\"", false },
        { "missing client secret", "accounts = (\n  { name = \"svc\"; org = \"o\"; client_id = \"c\"; } #<\n);\n",
          "missing key \"client_secret_file\"", false },
        { "missing store type", ACCT "stores = (\n  { name = \"v\"; url = \"https://v.example\"; } #<\n);\n",
          "store \"v\": missing key \"type\"", false },
        { "missing vault url", ACCT "stores = (\n  { name = \"v\"; type = \"vault\"; auth = { method = \"token\"; "
          "token = \"t\"; }; } #<\n);\n", "store \"v\": missing key \"url\"", false },
        { "missing aws region", ACCT "stores = (\n  { name = \"a\"; type = \"aws\"; auth = { method = \"default\"; }; } #<\n);\n",
          "missing key \"region\"", false },
        { "missing azure url", ACCT "stores = (\n  { name = \"z\"; type = \"azure\"; auth = { method = \"managed_identity\"; }; } #<\n);\n",
          "missing key \"url\"", false },
        { "missing auth", ACCT "stores = (\n  { name = \"v\"; type = \"vault\"; url = \"https://v.example\"; } #<\n);\n",
          "missing key \"auth\"", false },
        { "missing auth method", VAULT_AUTH("  auth = { token = \"t\"; }; #<\n"), "auth: missing key \"method\"", false },
        { "missing approle secret_id", VAULT_AUTH("  auth = { method = \"approle\"; role_id = \"r\"; }; #<\n"),
          "auth: missing key \"secret_id_file\"", false },
        { "missing approle role_id", VAULT_AUTH("  auth = { method = \"approle\"; secret_id = \"s\"; }; #<\n"),
          "auth: missing key \"role_id\"", false },
        { "missing kubernetes role", VAULT_AUTH("  auth = { method = \"kubernetes\"; }; #<\n"),
          "auth: missing key \"role\"", false },
        { "missing aws static key id", ACCT "stores = ( { name = \"a\"; type = \"aws\"; region = \"r\";\n"
          "  auth = { method = \"static\"; secret_access_key_file = \"aws.secret\"; }; #<\n} );\n",
          "missing key \"access_key_id\"", false },
        { "missing assume_role arn", ACCT "stores = ( { name = \"a\"; type = \"aws\"; region = \"r\";\n"
          "  auth = { method = \"assume_role\"; }; #<\n} );\n", "missing key \"role_arn\"", false },
        { "missing azure tenant", ACCT "stores = ( { name = \"z\"; type = \"azure\"; url = \"https://z.example\";\n"
          "  auth = { method = \"client_secret\"; client_id = \"c\"; client_secret_file = \"azure.secret\"; }; #<\n} );\n",
          "missing key \"tenant_id\"", false },
        { "missing integration secret", BASE INTEG_AT(SCOPES), "integration \"i1\": missing key \"secret\"", false },
        { "missing integration scopes", BASE INTEG_AT(SECRET), "missing key \"scopes\"", false },
        { "missing integration account", BASE "integrations = (\n  { name = \"i1\"; store = \"vault\"; "
          "scopes = [ \"a.b\" ]; secret = \"x\"; } #<\n);\n", "missing key \"account\"", false },
        /* wrong types */
        { "max_parallel as string", "max_parallel = \"8\"; #<\n", "max_parallel: expected an integer", false },
        { "ttl as integer", "policy = { ttl = 90; }; #<\n", "ttl: expected a string", false },
        { "state_dir as integer", "state_dir = 1; #<\n", "state_dir: expected a string", false },
        { "adopt as string", BASE INTEG(SCOPES SECRET "  adopt = \"yes\"; #<\n"), "adopt: expected true or false", false },
        { "scopes as string", BASE INTEG(SECRET "  scopes = \"projects.read\"; #<\n"),
          "scopes: expected an array of strings", false },
        { "scopes of integers", BASE INTEG(SECRET "  scopes = [ 1, 2 ]; #<\n"), "scopes: element 1: expected", false },
        { "accounts as group", "accounts = { name = \"svc\"; }; #<\n", "accounts: expected a list", false },
        { "policy as string", "policy = \"90d\"; #<\n", "policy: expected a group", false },
        { "auth as string", VAULT_AUTH("  auth = \"token\"; #<\n"), "auth: expected a group", false },
        { "kv_version as string", ACCT "stores = ( { name = \"v\"; type = \"vault\"; url = \"https://v.example\";\n"
          "  kv_version = \"2\"; #<\n  auth = { method = \"token\"; token = \"t\"; }; } );\n",
          "kv_version: expected an integer", false },
        { "list entry not a group", "integrations = ( #<\n  \"i1\"\n);\n", "integrations: entry 1: expected a group",
          false },
        /* duplicate names */
        { "duplicate account", "accounts = (\n  { name = \"svc\"; org = \"o\"; client_id = \"c\"; client_secret_file = \"svc.secret\"; },\n"
          "  { name = \"svc\"; org = \"o\"; client_id = \"d\"; client_secret_file = \"svc.secret\"; } #<\n);\n",
          "duplicate account name \"svc\" (first at line 2)", false },
        { "duplicate store", ACCT STORES(VAULT "  ,{ name = \"vault\"; type = \"aws\"; region = \"r\"; "
          "auth = { method = \"default\"; }; } #<\n"), "duplicate store name \"vault\"", false },
        { "duplicate integration", BASE "integrations = (\n"
          "  { name = \"i1\"; account = \"svc\"; store = \"vault\"; scopes = [ \"a.b\" ]; secret = \"x\"; },\n"
          "  { name = \"i1\"; account = \"svc\"; store = \"vault\"; scopes = [ \"a.b\" ]; secret = \"y\"; } #<\n);\n",
          "duplicate integration name \"i1\"", false },
        /* references */
        { "unknown account reference", BASE "integrations = ( { name = \"i1\"; store = \"vault\";\n"
          "  account = \"svcc\"; #<\n" SCOPES SECRET "} );\n",
          "account: unknown account \"svcc\"; did you mean \"svc\"?", false },
        { "unknown store reference", BASE "integrations = ( { name = \"i1\"; account = \"svc\";\n"
          "  store = \"valut\"; #<\n" SCOPES SECRET "} );\n",
          "store: unknown store \"valut\"; did you mean \"vault\"?", false },
        { "unknown store reference, nothing close", BASE "integrations = ( { name = \"i1\"; account = \"svc\";\n"
          "  store = \"s3\"; #<\n" SCOPES SECRET "} );\n", "store: unknown store \"s3\"", false },
        /* durations */
        { "duration with a space", "policy = { revoke_after = \"1 h\"; }; #<\n", "revoke_after \"1 h\": not a duration", false },
        { "duration with a long unit", "oneshot_timeout = \"5min\"; #<\n", "oneshot_timeout \"5min\": not a duration", false },
        { "duration without unit", "policy = { retry_min = \"60\"; }; #<\n", "retry_min \"60\": not a duration", false },
        { "negative duration", BASE INTEG(SCOPES SECRET "  ttl = \"-30d\"; #<\n"), "ttl \"-30d\": not a duration", false },
        { "duration overflow", "policy = { retry_max = \"99999999999999999999s\"; }; #<\n", "duration too large", false },
        { "empty duration", "policy = { retry_min = \"\"; }; #<\n", "retry_min: must not be empty", false },
        /* policy rules */
        { "renew_before equal to ttl", "policy = {\n  ttl = \"10d\";\n  renew_before = \"10d\"; #<\n};\n",
          "policy: renew_before (10d) must be shorter than ttl (10d)", false },
        { "renew_before over ttl after override", BASE INTEG(SCOPES SECRET "  ttl = \"7d\"; #<\n"),
          "integration \"i1\": renew_before (14d) must be shorter than ttl (7d)", false },
        { "renew_before override over ttl", BASE INTEG(SCOPES SECRET "  renew_before = \"91d\"; #<\n"),
          "renew_before (91d) must be shorter than ttl (90d)", false },
        { "ttl over 365 days", "policy = {\n  ttl = \"366d\"; #<\n};\n", "ttl 366d is over Onplana's maximum of 365d", false },
        { "ttl over 365 days in integration", BASE INTEG(SCOPES SECRET "  ttl = \"53w\"; #<\n"),
          "over Onplana's maximum", false },
        { "retry_min over retry_max", "policy = {\n  retry_min = \"2h\"; #<\n  retry_max = \"1h\";\n};\n",
          "retry_min (2h) is longer than retry_max (1h)", false },
        { "retry_max override under retry_min", BASE INTEG(SCOPES SECRET "  retry_max = \"30s\"; #<\n"),
          "retry_min (1m) is longer than retry_max (30s)", false },
        /* scopes */
        { "scope without action", BASE INTEG(SECRET "  scopes = [ \"projects\" ]; #<\n"),
          "scopes: \"projects\" is not of the form resource.action", false },
        { "scope in capitals", BASE INTEG(SECRET "  scopes = [ \"a.b\",\n    \"Projects.read\" ]; #<\n"),
          "\"Projects.read\" is not of the form", false },
        { "scope with two dots", BASE INTEG(SECRET "  scopes = [ \"projects.read.all\" ]; #<\n"), "not of the form", false },
        { "scope with empty action", BASE INTEG(SECRET "  scopes = [ \"projects.\" ]; #<\n"), "not of the form", false },
        { "scope with a space", BASE INTEG(SECRET "  scopes = [ \"projects. read\" ]; #<\n"), "not of the form", false },
        { "empty scope", BASE INTEG(SECRET "  scopes = [ \"\" ]; #<\n"), "scopes: element 1: expected a non-empty string", false },
        { "empty scopes list", BASE INTEG(SECRET "  scopes = [ ]; #<\n"), "scopes: list at least one scope", false },
        { "wildcard scope", BASE INTEG(SECRET "  scopes = [ \"projects.read\", \"WILDCARD\" ]; #<\n"),
          "\"WILDCARD\" grants every permission; set allow_wildcard = true", false },
        { "wildcard with allow_wildcard false", BASE INTEG(SECRET "  allow_wildcard = false;\n"
          "  scopes = [ \"WILDCARD\" ]; #<\n"), "set allow_wildcard = true", false },
        { "lowercase wildcard", BASE INTEG(SECRET "  allow_wildcard = true;\n  scopes = [ \"wildcard\" ]; #<\n"),
          "not of the form resource.action", false },
        /* formats */
        { "raw with kv_version 1", ACCT STORES("  { name = \"vault\"; type = \"vault\"; url = \"https://v.example\"; "
          "kv_version = 1; auth = { method = \"token\"; token = \"t\"; }; }\n")
          INTEG(SCOPES SECRET "  format = \"raw\"; #<\n"), "format \"raw\" needs Vault kv_version 2", false },
        { "unknown format", BASE INTEG(SCOPES SECRET "  format = \"jsn\"; #<\n"),
          "format: unknown format \"jsn\" (json or raw); did you mean \"json\"?", false },
        /* one secret, two integrations: each would revoke the other's token */
        { "two integrations, one vault secret", BASE "integrations = (\n"
          "  { name = \"a\"; account = \"svc\"; store = \"vault\";\n" SCOPES SECRET "  },\n"
          "  { name = \"b\"; account = \"svc\"; store = \"vault\";\n" SCOPES
          "    secret = \"onplana/i1\"; #<\n  }\n);\n",
          "integration \"b\": store \"vault\" secret \"onplana/i1\" is already integration \"a\"'s (line 6)", false },
        { "two integrations, one azure secret in other case", ACCT STORES(AZURE) "integrations = (\n"
          "  { name = \"a\"; account = \"svc\"; store = \"azure\"; secret = \"onplana-x\";\n" SCOPES "  },\n"
          "  { name = \"b\"; account = \"svc\"; store = \"azure\";\n" SCOPES
          "    secret = \"OnPlana-X\"; #<\n  }\n);\n",
          "store \"azure\" secret \"OnPlana-X\" is already integration \"a\"'s", false },
        { "third integration, one aws secret", ACCT STORES(AWS) "integrations = (\n"
          "  { name = \"a\"; account = \"svc\"; store = \"aws\"; secret = \"x\";\n" SCOPES "  },\n"
          "  { name = \"b\"; account = \"svc\"; store = \"aws\"; secret = \"y\";\n" SCOPES "  },\n"
          "  { name = \"c\"; account = \"svc\"; store = \"aws\";\n" SCOPES
          "    secret = \"x\"; #<\n  }\n);\n",
          "integration \"c\": store \"aws\" secret \"x\" is already integration \"a\"'s", false },
        /* secret names */
        { "azure name with a slash", ACCT STORES(AZURE) INTEG_S("azure", SCOPES "  secret = \"onplana/i1\"; #<\n"),
          "secret \"onplana/i1\": Azure Key Vault names are 1-127 of 0-9 a-z A-Z -", false },
        { "azure name with underscore", ACCT STORES(AZURE) INTEG_S("azure", SCOPES "  secret = \"onplana_i1\"; #<\n"),
          "Azure Key Vault names", false },
        { "azure name of 128", ACCT STORES(AZURE) INTEG_S("azure", SCOPES "  secret = \"" A64 A64 "\"; #<\n"),
          "Azure Key Vault names", false },
        { "vault path with dotdot", BASE INTEG(SCOPES "  secret = \"onplana/../sys/root\"; #<\n"),
          "Vault paths take no empty", false },
        { "vault path with empty segment", BASE INTEG(SCOPES "  secret = \"onplana//i1\"; #<\n"),
          "Vault paths take no empty", false },
        { "aws name with a space", ACCT STORES(AWS) INTEG_S("aws", SCOPES "  secret = \"onplana i1\"; #<\n"),
          "AWS secret names", false },
        /* control characters, anywhere */
        { "control character in org", "accounts = ( { name = \"svc\";\n  org = \"org\\x01a\"; #<\n"
          "  client_id = \"c\"; client_secret_file = \"svc.secret\"; } );\n", "org: control character in string", false },
        { "tab in a scope", BASE INTEG(SECRET "  scopes = [ \"projects.read\\t\" ]; #<\n"),
          "scopes: control character in string", false },
        { "newline in on_rotate", BASE INTEG(SCOPES SECRET "  on_rotate = [ \"/bin/echo\", \"a\\nb\" ]; #<\n"),
          "on_rotate: control character", false },
        { "DEL in state_dir", "state_dir = \"/var/lib/\\x7fpatrol\"; #<\n", "state_dir: control character", false },
        { "control character in an unknown key", "bogus = \"\\x1b[31m\"; #<\n", "bogus: control character", false },
        /* URLs */
        { "http vault url", ACCT "stores = ( { name = \"vault\"; type = \"vault\";\n  url = \"http://vault.example:8200\"; #<\n"
          "  auth = { method = \"token\"; token = \"t\"; }; } );\n",
          "url \"http://vault.example:8200\": plain http is only allowed to loopback", false },
        { "http onplana url", "onplana = {\n  url = \"http://api.onplana.com\"; #<\n};\n", "plain http is only allowed", false },
        { "http loopback lookalike", "onplana = { url = \"http://127.0.0.1.nip.io/\"; }; #<\n", "plain http", false },
        { "http userinfo trick", "onplana = { url = \"http://127.0.0.1@evil.example/\"; }; #<\n", "plain http", false },
        { "http private address", ACCT "stores = ( { name = \"a\"; type = \"aws\"; region = \"r\";\n"
          "  endpoint = \"http://10.0.0.1:4566\"; #<\n  auth = { method = \"default\"; }; } );\n",
          "endpoint \"http://10.0.0.1:4566\": plain http", false },
        { "http metadata lookalike", ACCT "stores = ( { name = \"a\"; type = \"aws\"; region = \"r\";\n"
          "  imds_endpoint = \"http://169.254.169.253\"; #<\n  auth = { method = \"default\"; }; } );\n", "plain http", false },
        { "http ipv6 not loopback", "onplana = { url = \"http://[::2]:8080\"; }; #<\n", "plain http", false },
        { "ftp url", "onplana = { url = \"ftp://api.onplana.com\"; }; #<\n", "not an http(s) URL", false },
        { "url without host", "onplana = { url = \"https:///v1\"; }; #<\n", "not an http(s) URL with a host", false },
        { "azure resource over http", ACCT "stores = ( { name = \"z\"; type = \"azure\"; url = \"https://z.example\";\n"
          "  resource = \"http://vault.azure.net\"; #<\n  auth = { method = \"managed_identity\"; }; } );\n",
          "resource \"http://vault.azure.net\": plain http", false },
        /* names */
        { "account name with a space", "accounts = ( {\n  name = \"svc warehouse\"; #<\n  org = \"o\"; "
          "client_id = \"c\"; client_secret_file = \"svc.secret\"; } );\n",
          "name \"svc warehouse\": names are 1-64 of A-Z a-z 0-9 . _ -", false },
        { "store name of 65", ACCT "stores = ( {\n  name = \"" A64 "a\"; #<\n  type = \"aws\"; region = \"r\"; "
          "auth = { method = \"default\"; }; } );\n", "names are 1-64", false },
        { "integration name with a slash", BASE "integrations = ( {\n  name = \"a/b\"; #<\n  account = \"svc\"; "
          "store = \"vault\";\n" SCOPES SECRET "} );\n", "name \"a/b\": names are 1-64", false },
        { "empty integration name", BASE "integrations = ( {\n  name = \"\"; #<\n  account = \"svc\"; "
          "store = \"vault\";\n" SCOPES SECRET "} );\n", "name: must not be empty", false },
        /* store types, auth methods, numbers */
        { "unknown store type", ACCT "stores = ( { name = \"v\";\n  type = \"vautl\"; #<\n} );\n",
          "type: unknown store type \"vautl\"; did you mean \"vault\"?", false },
        { "unknown auth method", VAULT_AUTH("  auth = {\n    method = \"aprole\"; #<\n  };\n"),
          "method: unknown vault auth method \"aprole\"; did you mean \"approle\"?", false },
        { "vault method on an aws store", ACCT "stores = ( { name = \"a\"; type = \"aws\"; region = \"r\";\n"
          "  auth = { method = \"token\"; }; #<\n} );\n", "unknown aws auth method \"token\"", false },
        { "kv_version 3", ACCT "stores = ( { name = \"v\"; type = \"vault\"; url = \"https://v.example\";\n"
          "  kv_version = 3; #<\n  auth = { method = \"token\"; token = \"t\"; }; } );\n",
          "kv_version: must be 1 or 2 (is 3)", false },
        { "max_parallel 0", "max_parallel = 0; #<\n", "max_parallel: must be at least 1 (is 0)", false },
        { "max_parallel negative", "max_parallel = -4; #<\n", "max_parallel: must be at least 1", false },
        /* on_rotate */
        { "on_rotate empty", BASE INTEG(SCOPES SECRET "  on_rotate = [ ]; #<\n"), "on_rotate: expected a non-empty argv", false },
        { "on_rotate relative", BASE INTEG(SCOPES SECRET "  on_rotate = [ \"systemctl\", \"reload\", \"x\" ]; #<\n"),
          "on_rotate: \"systemctl\" must be an absolute path", false },
        { "on_rotate string", BASE INTEG(SCOPES SECRET "  on_rotate = \"/bin/true\"; #<\n"),
          "on_rotate: expected an array of strings", false },
        { "on_rotate integers", BASE INTEG(SCOPES SECRET "  on_rotate = [ 1 ]; #<\n"),
          "on_rotate: element 1: expected", false },
        /* credentials */
        { "missing secret file", "accounts = ( { name = \"svc\"; org = \"o\"; client_id = \"c\";\n"
          "  client_secret_file = \"nope.secret\"; #<\n} );\n",
          "/nope.secret\": No such file or directory", false },
        { "empty secret file", "accounts = ( { name = \"svc\"; org = \"o\"; client_id = \"c\";\n"
          "  client_secret_file = \"empty.secret\"; #<\n} );\n", "empty.secret\": empty, or holds a NUL byte", false },
        { "secret inline and file", "accounts = ( { name = \"svc\"; org = \"o\"; client_id = \"c\";\n"
          "  client_secret = \"inline\";\n  client_secret_file = \"svc.secret\"; #<\n} );\n",
          "client_secret_file: client_secret is given inline too", false },
        { "vault token inline and file", VAULT_AUTH("  auth = { method = \"token\"; token = \"t\";\n"
          "    token_file = \"vault.token\"; #<\n  };\n"), "token_file: token is given inline too", false },
        { "missing approle secret_id file", VAULT_AUTH("  auth = { method = \"approle\"; role_id = \"r\";\n"
          "    secret_id_file = \"missing-id\"; #<\n  };\n"),
          "secret_id_file \"", false },
        { "missing aws session token file", ACCT "stores = ( { name = \"a\"; type = \"aws\"; region = \"r\";\n"
          "  auth = { method = \"static\"; access_key_id = \"AKIDEXAMPLE\"; secret_access_key_file = \"aws.secret\";\n"
          "    session_token_file = \"nope\"; #<\n  }; } );\n", "session_token_file \"", false },
        { "workload identity without tenant", ACCT "stores = ( { name = \"z\"; type = \"azure\"; url = \"https://z.example\";\n"
          "  auth = { method = \"workload_identity\"; client_id = \"c\"; token_file = \"wi.token\"; }; #<\n} );\n",
          "auth: workload_identity needs tenant_id (or $AZURE_TENANT_ID)", false },
        { "jwt_file missing with check_files", VAULT_AUTH("  auth = { method = \"kubernetes\"; role = \"r\";\n"
          "    jwt_file = \"nope.jwt\"; #<\n  };\n"), "nope.jwt\": No such file or directory", true },
        { "workload token_file missing with check_files", ACCT "stores = ( { name = \"z\"; type = \"azure\"; "
          "url = \"https://z.example\";\n  auth = { method = \"workload_identity\"; tenant_id = \"t\"; client_id = \"c\";\n"
          "    token_file = \"nope.token\"; #<\n  }; } );\n", "token_file \"", true },
};
#define N_BAD (sizeof(bad_cases) / sizeof(bad_cases[0]))

/* Line of the `#<` marker, counted from 1. */
static int marker_line(const char *text)
{
        const char *m = strstr(text, "#<");
        int line = 1;

        assert_non_null(m);
        for (const char *p = text; p < m; p++)
                line += *p == '\n';
        return line;
}

static char *write_conf(const char *name, const char *text, mode_t mode)
{
        char *p = write_file(dir, name, text, mode);

        assert_non_null(p);
        return p;
}

static void test_bad(void **state)
{
        const struct bad *b = *state;
        char name[32], *path, prefix[PATH_MAX + 32];
        struct config *c = NULL;
        int r;

        snprintf(name, sizeof(name), "bad-%zu.conf", (size_t)(b - bad_cases));
        path = write_conf(name, b->text, 0600);
        snprintf(prefix, sizeof(prefix), "%s:%d: ", path, marker_line(b->text));
        capture_start(&cap);
        r = config_load(path, b->check_files, &c);
        if (r != -EINVAL || capture_count(&cap, LOG_ERR) != 1 ||
            strncmp(cap.msg[0], prefix, strlen(prefix)) != 0 || !strstr(cap.msg[0], b->want)) {
                capture_dump(&cap);
                fail_msg("config_load = %d; want -EINVAL and one line \"%s...%s...\"", r, prefix, b->want);
        }
        assert_null(c);
        capture_stop(&cap);
        free(path);
}

/* Load `text` from a 0600 file: must succeed with nothing logged. */
static struct config *load_good(const char *name, const char *text, bool check_files)
{
        char *path = write_conf(name, text, 0600);
        struct config *c = NULL;
        int r;

        capture_start(&cap);
        r = config_load(path, check_files, &c);
        if (r != 0 || cap.n != 0) {
                capture_dump(&cap);
                fail_msg("%s: config_load = %d, %zu log lines", name, r, cap.n);
        }
        capture_stop(&cap);
        free(path);
        return c;
}

/* ---- what a good file loads to ---- */

static void test_defaults(void **state)
{
        struct config *c = load_good("empty.conf", "# nothing set\n", true);

        assert_string_equal(c->state_dir, "/var/lib/patrol");
        assert_int_equal(c->max_parallel, 8);
        assert_true(c->oneshot_timeout == 300);
        assert_null(c->metrics_file);
        assert_true(c->policy.ttl == 90 * 86400);
        assert_true(c->policy.renew_before == 14 * 86400);
        assert_true(c->policy.revoke_after == 0);
        assert_true(c->policy.retry_min == 60);
        assert_true(c->policy.retry_max == 3600);
        assert_string_equal(c->onplana.url, "https://api.onplana.com");
        assert_null(c->onplana.ca_file);
        assert_int_equal(c->n_accounts + c->n_stores + c->n_integrations, 0);
        assert_string_equal(c->dir, dir);
        config_free(c);
}

static const char full_text[] =
        "state_dir = \"/srv/patrol\";\nmax_parallel = 3;\noneshot_timeout = \"2m\";\n"
        "metrics_file = \"metrics/patrol.prom\";\n"
        "policy = { ttl = \"60d\"; renew_before = \"10d\"; revoke_after = \"1h\"; retry_min = \"30s\"; "
        "retry_max = \"2h\"; };\n"
        "onplana = { url = \"https://api.onplana.example/\"; ca_file = \"ca.pem\"; };\n"
        "accounts = (\n"
        "  { name = \"svc\"; org = \"org_a\"; client_id = \"cli_1\"; client_secret_file = \"svc.secret\"; },\n"
        "  { name = \"svc-2\"; org = \"org_b\"; client_id = \"cli_2\"; client_secret = \"inline-secret\"; }\n"
        ");\n"
        "stores = (\n"
        "  { name = \"vault\"; type = \"vault\"; url = \"https://vault.example:8200//\"; namespace = \"team-a\";\n"
        "    ca_file = \"/etc/vault-ca.pem\";\n"
        "    auth = { method = \"approle\"; mount = \"approle-ci\"; role_id = \"role-1\"; "
        "secret_id_file = \"approle.secret\"; }; },\n"
        "  { name = \"vault1\"; type = \"vault\"; url = \"http://127.0.0.1:8200\"; mount = \"kv\"; kv_version = 1;\n"
        "    auth = { method = \"kubernetes\"; role = \"patrol\"; jwt_file = \"k8s.jwt\"; }; },\n"
        "  { name = \"vault-tok\"; type = \"vault\"; url = \"https://v.example\";\n"
        "    auth = { method = \"token\"; token_file = \"vault.token\"; }; },\n"
        "  { name = \"vault-k8s\"; type = \"vault\"; url = \"https://v.example\";\n"
        "    auth = { method = \"kubernetes\"; role = \"r\"; }; },\n"
        "  { name = \"aws\"; type = \"aws\"; region = \"eu-west-1\"; endpoint = \"http://localhost:4566\";\n"
        "    sts_endpoint = \"https://sts.example\"; imds_endpoint = \"http://169.254.169.254\";\n"
        "    container_endpoint = \"http://169.254.170.2\"; kms_key_id = \"alias/patrol\";\n"
        "    auth = { method = \"default\"; profile = \"ci\"; }; },\n"
        "  { name = \"aws-static\"; type = \"aws\"; region = \"us-east-1\";\n"
        "    auth = { method = \"static\"; access_key_id = \"AKIDEXAMPLE\"; secret_access_key_file = \"aws.secret\";\n"
        "             session_token = \"inline-session\"; }; },\n"
        "  { name = \"aws-role\"; type = \"aws\"; region = \"us-east-1\"; imds_endpoint = \"http://[fd00:ec2::254]\";\n"
        "    auth = { method = \"assume_role\"; role_arn = \"arn:aws:iam::123456789012:role/patrol\";\n"
        "             external_id = \"ext\"; session_name = \"patrol\"; profile = \"src\"; }; },\n"
        "  { name = \"azure\"; type = \"azure\"; url = \"https://kv.vault.azure.net/\";\n"
        "    auth = { method = \"managed_identity\"; client_id = \"uami\"; }; },\n"
        "  { name = \"azure-sp\"; type = \"azure\"; url = \"https://kv2.vault.azure.net\";\n"
        "    authority_url = \"http://[::1]:9000\"; resource = \"https://vault.azure.cn\";\n"
        "    imds_endpoint = \"http://169.254.169.254\";\n"
        "    auth = { method = \"client_secret\"; tenant_id = \"t1\"; client_id = \"c1\";\n"
        "             client_secret_file = \"azure.secret\"; }; },\n"
        "  { name = \"azure-wi\"; type = \"azure\"; url = \"https://kv3.vault.azure.net\";\n"
        "    auth = { method = \"workload_identity\"; tenant_id = \"t2\"; client_id = \"c2\"; "
        "token_file = \"wi.token\"; }; }\n"
        ");\n"
        "integrations = (\n"
        "  { name = \"ingest\"; account = \"svc\"; store = \"vault\"; secret = \"onplana/ingest\";\n"
        "    scopes = [ \"projects.read\", \"time_entries.write\" ]; projects = [ \"prj_1\", \"prj_2\" ];\n"
        "    ttl = \"30d\"; adopt = true;\n"
        "    on_rotate = [ \"/bin/systemctl\", \"reload\", \"\", \"ingest.service\" ]; },\n"
        "  { name = \"reports\"; account = \"svc-2\"; store = \"aws\"; secret = \"arn:aws:secretsmanager:eu-west-1:1:secret:x\";\n"
        "    scopes = ( \"WILDCARD\" ); allow_wildcard = true; format = \"raw\"; projects = [ ]; },\n"
        "  { name = \"az\"; account = \"svc\"; store = \"azure\"; secret = \"" A64 A16 A16 A16 "aaaaaaaaaaaaaaa\";\n"
        "    scopes = [ \"a.b\" ]; renew_before = \"59d\"; retry_max = \"30s\"; retry_min = \"10s\"; }\n"
        ");\n";

static void check_full_stores(const struct config *c)
{
        const struct cfg_store *s = c->stores;

        assert_int_equal(c->n_stores, 10);
        assert_int_equal(s[0].type, STORE_VAULT);
        assert_string_equal(s[0].url, "https://vault.example:8200");
        assert_string_equal(s[0].mount, "secret");
        assert_int_equal(s[0].kv_version, 2);
        assert_string_equal(s[0].namespace_, "team-a");
        assert_string_equal(s[0].ca_file, "/etc/vault-ca.pem");
        assert_int_equal(s[0].auth.method, AUTH_VAULT_APPROLE);
        assert_string_equal(s[0].auth.mount, "approle-ci");
        assert_string_equal(s[0].auth.secret_id, "approle-secret-id");
        assert_string_equal(s[1].mount, "kv");
        assert_int_equal(s[1].kv_version, 1);
        assert_int_equal(s[1].auth.method, AUTH_VAULT_KUBERNETES);
        assert_true(strstr(s[1].auth.jwt_file, "/k8s.jwt") && s[1].auth.jwt_file[0] == '/');
        assert_string_equal(s[2].auth.token, "vault-token");
        assert_string_equal(s[3].auth.jwt_file, "/var/run/secrets/kubernetes.io/serviceaccount/token");
        assert_int_equal(s[4].auth.method, AUTH_AWS_DEFAULT);
        assert_string_equal(s[4].auth.profile, "ci");
        assert_string_equal(s[4].endpoint, "http://localhost:4566");
        assert_string_equal(s[4].kms_key_id, "alias/patrol");
        assert_string_equal(s[5].auth.secret_access_key, "aws-secret-key");
        assert_string_equal(s[5].auth.session_token, "inline-session");
        assert_int_equal(s[6].auth.method, AUTH_AWS_ASSUME_ROLE);
        assert_string_equal(s[6].auth.external_id, "ext");
        assert_string_equal(s[7].url, "https://kv.vault.azure.net");
        assert_string_equal(s[7].resource, "https://vault.azure.net");
        assert_string_equal(s[7].authority_url, "https://login.microsoftonline.com");
        assert_string_equal(s[7].auth.client_id, "uami");
        assert_string_equal(s[8].resource, "https://vault.azure.cn");
        assert_string_equal(s[8].auth.client_secret, "azure-client-secret");
        assert_int_equal(s[9].auth.method, AUTH_AZURE_WORKLOAD_IDENTITY);
        assert_non_null(strstr(s[9].auth.token_file, "/wi.token"));
}

static void check_full_integrations(const struct config *c)
{
        const struct cfg_integration *in = c->integrations;

        assert_int_equal(c->n_integrations, 3);
        assert_ptr_equal(in[0].account, &c->accounts[0]);
        assert_ptr_equal(in[0].store, &c->stores[0]);
        assert_int_equal(in[0].n_scopes, 2);
        assert_string_equal(in[0].scopes[1], "time_entries.write");
        assert_int_equal(in[0].n_projects, 2);
        assert_true(in[0].adopt && !in[0].allow_wildcard);
        assert_int_equal(in[0].format, FORMAT_JSON);
        assert_true(in[0].policy->ttl == 30 * 86400 && in[0].policy->renew_before == 10 * 86400);
        assert_true(in[0].policy->revoke_after == 3600);
        assert_string_equal(in[0].on_rotate[0], "/bin/systemctl");
        assert_string_equal(in[0].on_rotate[2], "");
        assert_null(in[0].on_rotate[4]);
        assert_true(in[1].allow_wildcard);
        assert_int_equal(in[1].format, FORMAT_RAW);
        assert_int_equal(in[1].n_projects, 0);
        assert_null(in[1].on_rotate);
        assert_true(in[1].policy->ttl == 60 * 86400);
        assert_true(in[2].policy->renew_before == 59 * 86400 && in[2].policy->retry_max == 30);
        assert_ptr_equal(config_find_integration(c, "az"), &in[2]);
        assert_null(config_find_integration(c, "nope"));
}

static void test_full(void **state)
{
        struct config *c = load_good("full.conf", full_text, false);
        char *want = NULL;

        assert_string_equal(c->state_dir, "/srv/patrol");
        assert_int_equal(c->max_parallel, 3);
        assert_true(c->oneshot_timeout == 120);
        assert_true(asprintf(&want, "%s/metrics/patrol.prom", dir) > 0);
        assert_string_equal(c->metrics_file, want);
        free(want);
        assert_true(c->policy.ttl == 60 * 86400 && c->policy.retry_min == 30);
        assert_string_equal(c->onplana.url, "https://api.onplana.example");
        assert_true(asprintf(&want, "%s/ca.pem", dir) > 0);
        assert_string_equal(c->onplana.ca_file, want);
        free(want);
        assert_int_equal(c->n_accounts, 2);
        assert_string_equal(c->accounts[0].client_secret, "svc-client-secret");
        assert_string_equal(c->accounts[1].client_secret, "inline-secret");
        assert_ptr_equal(config_find_account(c, "svc-2"), &c->accounts[1]);
        check_full_stores(c);
        check_full_integrations(c);
        assert_string_equal(store_type_name(c->stores[7].type), "azure");
        config_free(c);
}

/* Equal scopes and projects lists (same strings, same order) are one array,
 * and integrations without policy overrides read the top-level policy:
 * thousands of integrations keep one copy.  config_free frees each once
 * (ASan and valgrind runs see a double free or a leak). */
#define SHARED_INTEG(name, body) "  { name = \"" name "\"; account = \"svc\"; store = \"vault\"; " \
        "secret = \"onplana/" name "\";\n    " body " }"
static const char shared_text[] =
        BASE "integrations = (\n"
        SHARED_INTEG("a", "scopes = [ \"projects.read\", \"tasks.read\" ]; projects = [ \"prj_1\", \"prj_23\" ];") ",\n"
        SHARED_INTEG("b", "scopes = ( \"projects.read\", \"tasks.read\" ); projects = [ \"prj_1\", \"prj_23\" ]; "
                     "ttl = \"90d\";") ",\n"
        SHARED_INTEG("c", "scopes = [ \"tasks.read\", \"projects.read\" ]; projects = [ \"prj_12\", \"prj_3\" ]; "
                     "ttl = \"30d\";") ",\n"
        SHARED_INTEG("d", "scopes = [ \"projects.read\" ]; projects = [ ]; ttl = \"30d\";") ",\n"
        SHARED_INTEG("e", "scopes = [ \"projects.read\", \"tasks.read\", \"tasks.write\" ]; projects = [ ]; "
                     "ttl = \"30d\"; retry_max = \"2h\";") "\n"
        ");\n";

static void test_shared_lists(void **state)
{
        struct config *c = load_good("shared-lists.conf", shared_text, false);
        const struct cfg_integration *in = c->integrations;
        char *path;

        assert_int_equal(c->n_integrations, 5);
        assert_ptr_equal(in[0].scopes, in[1].scopes);
        assert_ptr_equal(in[0].projects, in[1].projects);
        assert_int_equal(in[1].n_scopes, 2);
        assert_string_equal(in[1].scopes[1], "tasks.read");
        assert_null(in[1].scopes[2]);
        /* the same strings in another order, a prefix, a longer list */
        assert_ptr_not_equal(in[2].scopes, in[0].scopes);
        assert_string_equal(in[2].scopes[0], "tasks.read");
        assert_ptr_not_equal(in[3].scopes, in[0].scopes);
        assert_int_equal(in[3].n_scopes, 1);
        assert_ptr_not_equal(in[4].scopes, in[0].scopes);
        assert_int_equal(in[4].n_scopes, 3);
        /* "prj_1","prj_23" is not "prj_12","prj_3", though the letters run the same */
        assert_ptr_not_equal(in[2].projects, in[0].projects);
        assert_string_equal(in[2].projects[1], "prj_3");
        assert_ptr_equal(in[3].projects, in[4].projects);
        assert_int_equal(in[3].n_projects, 0);
        /* ttl = "90d" is the top-level value: nothing overridden */
        assert_ptr_equal(in[0].policy, &c->policy);
        assert_ptr_equal(in[1].policy, &c->policy);
        assert_ptr_equal(in[2].policy, in[3].policy);
        assert_ptr_not_equal(in[2].policy, &c->policy);
        assert_true(in[2].policy->ttl == 30 * 86400 && in[2].policy->retry_max == 3600);
        assert_ptr_not_equal(in[4].policy, in[2].policy);
        assert_true(in[4].policy->ttl == 30 * 86400 && in[4].policy->retry_max == 7200);
        config_free(c);

        /* Rejected after lists were shared: each is freed once all the same. */
        path = write_conf("shared-bad.conf", BASE "integrations = (\n"
                          SHARED_INTEG("a", "scopes = [ \"projects.read\" ]; projects = [ \"p\" ]; ttl = \"9d\";") ",\n"
                          SHARED_INTEG("a", "scopes = [ \"projects.read\" ]; projects = [ \"p\" ]; ttl = \"9d\";") "\n"
                          ");\n", 0600);
        c = NULL;
        capture_start(&cap);
        assert_int_equal(config_load(path, false, &c), -EINVAL);
        assert_null(c);
        assert_non_null(capture_find(&cap, LOG_ERR, "duplicate integration name \"a\""));
        capture_stop(&cap);
        free(path);
}

/* One good configuration per rule, next to the bad ones above. */
static const struct good {
        const char *name;
        const char *text;
} good_cases[] = {
        { "good minimal", GOOD },
        { "good loopback http", "onplana = { url = \"http://127.0.0.1:8443/\"; };\n" },
        { "good loopback 127/8", "onplana = { url = \"http://127.3.2.1\"; };\n" },
        { "good localhost http", "onplana = { url = \"http://LOCALHOST:1/x?y\"; };\n" },
        { "good ipv6 loopback", "onplana = { url = \"http://[::1]:8080/\"; };\n" },
        { "good ecs endpoints", ACCT STORES("  { name = \"a\"; type = \"aws\"; region = \"r\"; "
          "container_endpoint = \"http://169.254.170.23/v1\"; imds_endpoint = \"http://[fd00:ec2::23]\"; "
          "auth = { method = \"default\"; }; }\n") },
        { "good wildcard allowed", BASE INTEG(SECRET "  allow_wildcard = true; scopes = [ \"WILDCARD\", \"a.b\" ];\n") },
        { "good raw with kv2", BASE INTEG(SCOPES SECRET "  format = \"raw\";\n") },
        { "good json with kv1", ACCT STORES("  { name = \"vault\"; type = \"vault\"; url = \"https://v.example\"; "
          "kv_version = 1; auth = { method = \"token\"; token = \"t\"; }; }\n") INTEG(SCOPES SECRET) },
        { "good azure name of 127", ACCT STORES(AZURE) INTEG_S("azure", SCOPES "  secret = \"" A64 A16 A16 A16
          "aaaaaaaaaaaaaa-\";\n") },
        { "good aws arn", ACCT STORES(AWS) INTEG_S("aws", SCOPES
          "  secret = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:onplana/i1-AbCdEf\";\n") },
        { "good empty lists", "accounts = [ ];\nstores = ( );\nintegrations = [ ];\n" },
        { "good scopes digits underscore", BASE INTEG(SECRET "  scopes = [ \"time_entries2.read_all\" ];\n") },
        { "good renew_before under ttl override", BASE INTEG(SCOPES SECRET "  ttl = \"15d\";\n") },
        { "good ttl of 365d", "policy = { ttl = \"365d\"; };\n" },
        { "good retry equal", "policy = { retry_min = \"1h\"; retry_max = \"60m\"; };\n" },
        { "good durations", "oneshot_timeout = \"1w\";\npolicy = { revoke_after = \"12h\"; retry_min = \"5s\"; };\n" },
        { "good names", "accounts = ( { name = \"A.b_c-9\"; org = \"o\"; client_id = \"c\"; client_secret = \"s\"; } );\n" },
        { "good kubernetes default jwt", VAULT_AUTH("  auth = { method = \"kubernetes\"; role = \"r\"; mount = \"k8s\"; };\n") },
        { "good vault secret_id inline", VAULT_AUTH("  auth = { method = \"approle\"; role_id = \"r\"; secret_id = \"s\"; };\n") },
        { "good max_parallel 1", "max_parallel = 1;\n" },
        { "good on_rotate one element", BASE INTEG(SCOPES SECRET "  on_rotate = [ \"/usr/bin/true\" ];\n") },
        { "good one secret name in two stores", ACCT STORES(VAULT "  ,{ name = \"vault2\"; type = \"vault\"; "
          "url = \"https://vault.example:8200\"; mount = \"kv\"; auth = { method = \"token\"; token = \"t\"; }; }\n")
          "integrations = (\n  { name = \"a\"; account = \"svc\"; store = \"vault\";\n" SCOPES SECRET "  },\n"
          "  { name = \"b\"; account = \"svc\"; store = \"vault2\";\n" SCOPES SECRET "  }\n);\n" },
        { "good vault secrets differing in case", BASE "integrations = (\n"
          "  { name = \"a\"; account = \"svc\"; store = \"vault\"; secret = \"onplana/x\";\n" SCOPES "  },\n"
          "  { name = \"b\"; account = \"svc\"; store = \"vault\"; secret = \"onplana/X\";\n" SCOPES "  }\n);\n" },
        { "good config order", INTEG(SCOPES SECRET) STORES(VAULT) ACCT "policy = { ttl = \"20d\"; };\n" },
};
#define N_GOOD (sizeof(good_cases) / sizeof(good_cases[0]))

static void test_good(void **state)
{
        const struct good *g = *state;
        char name[32];

        snprintf(name, sizeof(name), "good-%zu.conf", (size_t)(g - good_cases));
        config_free(load_good(name, g->text, false));
}

/* ---- credentials ---- */

/* Credential files from $CREDENTIALS_DIRECTORY; other relative paths (ca_file)
 * still from the configuration's folder. */
static void test_credentials_directory(void **state)
{
        char *cred = test_mkdtemp(), *want = NULL;
        struct config *c;

        assert_non_null(cred);
        free(write_file(cred, "svc.secret", "from-credentials-directory\n", 0600));
        free(write_file(cred, "vault.token", "token-from-credentials-directory\n", 0600));
        setenv("CREDENTIALS_DIRECTORY", cred, 1);
        c = load_good("cred.conf", ACCT STORES(VAULT "  ,{ name = \"k\"; type = \"vault\"; url = \"https://k.example\"; "
                      "ca_file = \"ca.pem\";\n    auth = { method = \"kubernetes\"; role = \"r\"; "
                      "jwt_file = \"k8s.jwt\"; }; }\n"), false);
        unsetenv("CREDENTIALS_DIRECTORY");
        assert_string_equal(c->accounts[0].client_secret, "from-credentials-directory");
        assert_string_equal(c->stores[0].auth.token, "token-from-credentials-directory");
        assert_true(asprintf(&want, "%s/k8s.jwt", cred) > 0);
        assert_string_equal(c->stores[1].auth.jwt_file, want);
        free(want);
        assert_true(asprintf(&want, "%s/ca.pem", dir) > 0);
        assert_string_equal(c->stores[1].ca_file, want);
        free(want);
        config_free(c);
        rm_rf(cred);
        free(cred);
}

static void test_credentials_beside_config(void **state)
{
        struct config *c = load_good("beside.conf", GOOD, false);

        assert_string_equal(c->accounts[0].client_secret, "svc-client-secret");
        assert_string_equal(c->stores[0].auth.token, "vault-token");
        config_free(c);
}

static void test_absolute_credential_path(void **state)
{
        char *text = NULL;
        struct config *c;

        assert_true(asprintf(&text, "accounts = ( { name = \"svc\"; org = \"o\"; client_id = \"c\"; "
                             "client_secret_file = \"%s/azure.secret\"; } );\n", dir) > 0);
        setenv("CREDENTIALS_DIRECTORY", "/nonexistent", 1);
        c = load_good("abs.conf", text, false);
        unsetenv("CREDENTIALS_DIRECTORY");
        assert_string_equal(c->accounts[0].client_secret, "azure-client-secret");
        config_free(c);
        free(text);
}

static void test_workload_identity_env(void **state)
{
        struct config *c;

        setenv("AZURE_TENANT_ID", "env-tenant", 1);
        setenv("AZURE_CLIENT_ID", "env-client", 1);
        setenv("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token", 1);
        c = load_good("wi.conf", ACCT "stores = ( { name = \"z\"; type = \"azure\"; url = \"https://z.example\";\n"
                      "  auth = { method = \"workload_identity\"; client_id = \"own-client\"; }; } );\n", false);
        unsetenv("AZURE_TENANT_ID");
        unsetenv("AZURE_CLIENT_ID");
        unsetenv("AZURE_FEDERATED_TOKEN_FILE");
        assert_string_equal(c->stores[0].auth.tenant_id, "env-tenant");
        assert_string_equal(c->stores[0].auth.client_id, "own-client");     /* the file wins */
        assert_string_equal(c->stores[0].auth.token_file, "/var/run/secrets/azure/tokens/azure-identity-token");
        config_free(c);
}

/* jwt_file and token_file stay paths: only --check-config insists they exist. */
static void test_check_files(void **state)
{
        const char *text = VAULT_AUTH("  auth = { method = \"kubernetes\"; role = \"r\"; jwt_file = \"later.jwt\"; };\n");
        struct config *c = load_good("later.conf", text, false);
        char *jwt;

        config_free(c);
        jwt = write_file(dir, "later.jwt", "jwt", 0600);
        c = load_good("later.conf", text, true);
        assert_string_equal(c->stores[0].auth.jwt_file, jwt);
        config_free(c);
        unlink(jwt);
        free(jwt);
}

/* ---- permissions ---- */

static void expect_refused(const char *name, mode_t mode)
{
        char *path = write_conf(name, GOOD, mode);
        struct config *c = NULL;

        capture_start(&cap);
        assert_int_equal(config_load(path, false, &c), -EINVAL);
        assert_null(c);
        assert_int_equal(capture_count(&cap, LOG_ERR), 1);
        assert_non_null(strstr(cap.msg[0], path));
        assert_non_null(strstr(cap.msg[0], "writable by group or others"));
        capture_stop(&cap);
        free(path);
}

static void test_group_writable_refused(void **state)
{
        expect_refused("gw.conf", 0620);
        expect_refused("ow.conf", 0602);
        expect_refused("all.conf", 0666);
}

static void expect_warnings(const char *text, mode_t mode, size_t n, const char *want)
{
        char *path = write_conf("shared.conf", text, mode);
        struct config *c = NULL;

        capture_start(&cap);
        assert_int_equal(config_load(path, false, &c), 0);
        assert_int_equal(capture_count(&cap, LOG_ERR), 0);
        if (capture_count(&cap, LOG_WARNING) != n ||
            (want && !capture_find(&cap, LOG_WARNING, want))) {
                capture_dump(&cap);
                fail_msg("want %zu warnings with \"%s\"", n, want ? want : "");
        }
        if (want)
                assert_non_null(capture_find(&cap, LOG_WARNING, path));
        capture_stop(&cap);
        config_free(c);
        free(path);
}

static void test_shared_inline_secret_warns(void **state)
{
        const char *inl = "accounts = ( { name = \"svc\"; org = \"o\"; client_id = \"c\";\n"
                          "  client_secret = \"inline\"; } );\n";

        expect_warnings(inl, 0644, 1, ":2: client_secret is inline in a file other users can read (mode 0644)");
        expect_warnings(inl, 0640, 1, "(mode 0640)");
        expect_warnings(inl, 0604, 1, "client_secret is inline");
        expect_warnings(inl, 0600, 0, NULL);
        expect_warnings(GOOD, 0644, 0, NULL);   /* files only: nothing to warn about */
        expect_warnings(VAULT_AUTH("  auth = { method = \"approle\"; role_id = \"r\";\n  secret_id = \"s\"; };\n"),
                        0644, 1, ":4: secret_id is inline");
}

/* A relative path is reported as given; its folder is made absolute. */
static void test_relative_path(void **state)
{
        struct config *c = NULL;

        free(write_conf("rel.conf", GOOD, 0600));
        free(write_conf("rel-bad.conf", "max_parallel = 0;\n", 0600));
        assert_int_equal(config_load("rel.conf", false, &c), 0);
        assert_string_equal(c->path, "rel.conf");
        assert_string_equal(c->dir, dir);
        config_free(c);
        c = NULL;
        capture_start(&cap);
        assert_int_equal(config_load("rel-bad.conf", false, &c), -EINVAL);
        assert_int_equal(cap.n, 1);
        assert_true(strncmp(cap.msg[0], "rel-bad.conf:1: max_parallel", 28) == 0);
        capture_stop(&cap);
}

static void test_unreadable_file(void **state)
{
        struct config *c = NULL;
        char *path = NULL;

        assert_true(asprintf(&path, "%s/does-not-exist.conf", dir) > 0);
        capture_start(&cap);
        assert_int_equal(config_load(path, false, &c), -ENOENT);
        assert_null(c);
        assert_int_equal(capture_count(&cap, LOG_ERR), 1);
        assert_non_null(strstr(cap.msg[0], path));
        capture_stop(&cap);
        free(path);
}

/* One error line, starting with want (then -EINVAL). */
static void expect_one_error(const char *path, const char *want)
{
        struct config *c = NULL;
        int r;

        capture_start(&cap);
        r = config_load(path, false, &c);
        if (r != -EINVAL || capture_count(&cap, LOG_ERR) != 1 || strncmp(cap.msg[0], want, strlen(want)) != 0) {
                capture_dump(&cap);
                fail_msg("config_load(%s) = %d; want -EINVAL and one line \"%s\"", path, r, want);
        }
        assert_null(c);
        capture_stop(&cap);
}

/* A folder, as the configuration or through @include, made libconfig's flex
 * scanner exit(2) ("input in flex scanner failed"), on a SIGHUP too. */
static void test_not_a_regular_file(void **state)
{
        char *outer, *inner, *want = NULL, *text = NULL;
        struct config *c;

        assert_int_equal(mkdir("inc.d", 0700), 0);
        assert_true(asprintf(&want, "%s: not a regular file", dir) > 0);
        expect_one_error(dir, want);
        free(want);
        /* relative to the working folder, as libconfig opens it */
        outer = write_conf("outer.conf", "max_parallel = 2;\n@include \"inc.d\"\n", 0600);
        assert_true(asprintf(&want, "%s:2: @include \"inc.d\": not a regular file", outer) > 0);
        expect_one_error(outer, want);
        free(want);
        free(outer);
        /* nested, blamed on the file and line that names it */
        inner = write_conf("inner.conf", "# inner\nstate_dir = \"/x\";\n  @include   \"/dev/null/..\"\n"
                           "@include \"inc.d\"\n", 0600);
        assert_true(asprintf(&text, "@include \"%s\"\nmax_parallel = 2;\n", inner) > 0);
        outer = write_conf("outer.conf", text, 0600);
        assert_true(asprintf(&want, "%s:4: @include \"inc.d\": not a regular file", inner) > 0);
        expect_one_error(outer, want);
        free(want);
        free(outer);
        free(text);
        /* regular files still include, and a commented one is not read */
        free(write_conf("inner.conf", "state_dir = \"/x\";\n", 0600));
        c = load_good("outer.conf", "# @include \"inc.d\"\n@include \"inner.conf\"\nmax_parallel = 2;\n", false);
        assert_string_equal(c->state_dir, "/x");
        assert_int_equal(c->max_parallel, 2);
        config_free(c);
        free(inner);
        assert_int_equal(rmdir("inc.d"), 0);
}

/* ---- helpers exported by config.c ---- */

static void test_suggest(void **state)
{
        static const char *const keys[] = { "ttl", "renew_before", "revoke_after", "retry_min", "retry_max" };

        assert_string_equal(config_suggest("tll", keys, 5), "ttl");
        assert_string_equal(config_suggest("renewbefore", keys, 5), "renew_before");
        assert_string_equal(config_suggest("retry_mni", keys, 5), "retry_min");
        assert_string_equal(config_suggest("TTL", keys, 5), "ttl");
        assert_null(config_suggest("colour", keys, 5));
        assert_null(config_suggest("x", keys, 5));
        assert_null(config_suggest("ttl", keys, 0));
}

static void test_url_allowed(void **state)
{
        static const char *const ok[] = {
                "https://example.com", "HTTPS://x", "http://127.0.0.1", "http://127.255.0.9:80/x",
                "http://localhost", "http://localhost:8080/v1", "http://[::1]:1", "http://169.254.169.254/latest",
                "http://169.254.170.2/v2", "http://169.254.170.23", "http://[fd00:ec2::254]", "http://[fd00:ec2::23]/",
                "http://user@127.0.0.1/",
        };
        static const char *const no[] = {
                "http://example.com", "http://128.0.0.1", "http://169.254.169.253", "http://[::2]",
                "http://127.0.0.1.example.com", "http://127.0.0.1@example.com", "ftp://127.0.0.1",
                "http://", "https://", "127.0.0.1", "http://[::1", "http://localhost.example", "",
                "http://[fd00:ec2::255]", "http://0x7f.0.0.1",
        };

        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
                if (!config_url_allowed(ok[i]))
                        fail_msg("refused %s", ok[i]);
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
                if (config_url_allowed(no[i]))
                        fail_msg("allowed %s", no[i]);
        assert_false(config_url_allowed(NULL));
}

/* The shipped example must pass --check-config.  Copied to a 0600 file:
 * git does not keep permissions, and a group-writable checkout is refused. */
static void test_example(void **state)
{
        const char *src = getenv("PATROL_SRCDIR");
        char *path = NULL, *etc = NULL, *text;
        struct config *c;

        if (!src || !*src)
                skip();
        assert_true(asprintf(&path, "%s/etc/patrol.conf.example", src) > 0);
        assert_true(asprintf(&etc, "%s/etc", src) > 0);
        text = read_text(path);
        assert_non_null(text);
        setenv("CREDENTIALS_DIRECTORY", etc, 1);
        c = load_good("example.conf", text, true);
        unsetenv("CREDENTIALS_DIRECTORY");
        assert_int_equal(c->n_accounts, 2);
        assert_int_equal(c->n_stores, 3);
        assert_true(c->n_integrations >= 3);
        assert_string_equal(c->accounts[0].client_secret, "example-client-secret-change-me");
        config_free(c);
        free(text);
        free(etc);
        free(path);
}

/* ---- fixture ---- */

static int setup(void **state)
{
        static const struct { const char *name, *content; } files[] = {
                { "svc.secret", "svc-client-secret\n" },
                { "vault.token", "vault-token\n" },
                { "approle.secret", "approle-secret-id" },
                { "aws.secret", "aws-secret-key\n" },
                { "azure.secret", "azure-client-secret\r\n" },
                { "k8s.jwt", "header.payload.signature\n" },
                { "wi.token", "federated-token\n" },
                { "empty.secret", "\n" },
        };

        dir = test_mkdtemp();
        if (!dir)
                return -1;
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
                char *p = write_file(dir, files[i].name, files[i].content, 0600);

                if (!p)
                        return -1;
                free(p);
        }
        if (chdir(dir) < 0)
                return -1;
        unsetenv("CREDENTIALS_DIRECTORY");
        unsetenv("AZURE_TENANT_ID");
        unsetenv("AZURE_CLIENT_ID");
        unsetenv("AZURE_FEDERATED_TOKEN_FILE");
        return 0;
}

static int teardown(void **state)
{
        rm_rf(dir);
        free(dir);
        return 0;
}

static const struct CMUnitTest fixed_tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_shared_lists),
        cmocka_unit_test(test_credentials_directory),
        cmocka_unit_test(test_credentials_beside_config),
        cmocka_unit_test(test_absolute_credential_path),
        cmocka_unit_test(test_workload_identity_env),
        cmocka_unit_test(test_check_files),
        cmocka_unit_test(test_group_writable_refused),
        cmocka_unit_test(test_shared_inline_secret_warns),
        cmocka_unit_test(test_relative_path),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_not_a_regular_file),
        cmocka_unit_test(test_suggest),
        cmocka_unit_test(test_url_allowed),
        cmocka_unit_test(test_example),
};
#define N_FIXED (sizeof(fixed_tests) / sizeof(fixed_tests[0]))

/* One TAP line per table entry: the tests are built at run time, and run
 * as a single group. */
int main(void)
{
        struct CMUnitTest *tests = calloc(N_FIXED + N_GOOD + N_BAD, sizeof(*tests));
        size_t n = 0;
        int r;

        if (!tests)
                return 1;
        for (size_t i = 0; i < N_FIXED; i++)
                tests[n++] = fixed_tests[i];
        for (size_t i = 0; i < N_GOOD; i++)
                tests[n++] = (struct CMUnitTest) { .name = good_cases[i].name, .test_func = test_good,
                                                   .initial_state = (void *)&good_cases[i] };
        for (size_t i = 0; i < N_BAD; i++)
                tests[n++] = (struct CMUnitTest) { .name = bad_cases[i].name, .test_func = test_bad,
                                                   .initial_state = (void *)&bad_cases[i] };
        r = _cmocka_run_group_tests("config", tests, n, setup, teardown);
        free(tests);
        return r;
}
