/* azure_auth.c: being written. */
