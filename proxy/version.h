/* version: what this binary is and what it was built with. */
#ifndef PYROGUARD_VERSION_H
#define PYROGUARD_VERSION_H

#include <stddef.h>

/* version_string writes "pyroguard X.Y.Z (BoringSSL, libuv …, libyaml …, zlib …)". */
void version_string(char *out, size_t out_len);

#endif
