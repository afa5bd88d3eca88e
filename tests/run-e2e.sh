#!/bin/sh
echo "1..0 # SKIP e2e not yet"
