/* records.c: placeholder, being written. */
