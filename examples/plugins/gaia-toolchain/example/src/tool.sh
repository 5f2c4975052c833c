#!/bin/sh
echo "toolchain tool 1.0"
