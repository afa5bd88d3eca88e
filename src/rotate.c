/* rotate.c: placeholder, being written. */
