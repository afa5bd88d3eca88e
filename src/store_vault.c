/* store_vault.c: placeholder, being written. */
