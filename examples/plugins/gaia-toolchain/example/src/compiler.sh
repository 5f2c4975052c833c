#!/bin/sh
echo "example compiler 1.0"
