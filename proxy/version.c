#include "version.h"

#include <stdio.h>

#include <openssl/crypto.h>
#include <uv.h>
#include <yaml.h>
#include <zlib.h>

void version_string(char *out, size_t out_len)
{
    snprintf(out, out_len, "pyroguard %s (BoringSSL, libuv %s, libyaml %s, zlib %s)",
             PYROGUARD_VERSION, uv_version_string(), yaml_get_version_string(), zlibVersion());
}
