/* sigv4.c: placeholder, being written. */
