/* store_aws.c: being written. */
