/* onplana.c: placeholder, being written. */
