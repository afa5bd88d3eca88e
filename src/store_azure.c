/* store_azure.c: being written. */
