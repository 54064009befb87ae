/* A test pod's process that reads its NIC from the device metadata file (KEP-5304) and checks it
 * against its own network namespace: argv[1] is the file's path in the container. It waits (up to
 * 30 s) for the device's networkData (argv[1] ending in '/': the first *-metadata.json under that
 * directory, for a claim whose name the pod spec does not know), then prints one line to its log
 *   METADATA ifname=<interfaceName> ip=<first of ips> generation=<n> kernel=<the addresses the
 *   kernel shows on that interface, comma-separated>
 * and stays up like a pause process (exits 0 on SIGTERM). Built statically by the e2e test:
 *   gcc -static -Os -o metaread metaread.c */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <ftw.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static char found[4096];

static int pick(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st; (void)ftw;
    size_t n = strlen(path), s = strlen("-metadata.json");
    if (type == FTW_F && n > s && strcmp(path + n - s, "-metadata.json") == 0 && strlen(path) < sizeof found) {
        strcpy(found, path);
        return 1;
    }
    return 0;
}

/* The string value after `"key":` in text (our files are JSON written by json.dumps). */
static int json_string(const char *text, const char *key, char *out, size_t n) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(text, pat);
    if (!p) return 0;
    p = strchr(p + strlen(pat), '"');
    if (!p) return 0;
    const char *e = strchr(++p, '"');
    if (!e || (size_t)(e - p) >= n) return 0;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = 0;
    return 1;
}

static long json_int(const char *text, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(text, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

int main(int argc, char **argv) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    static char buf[65536];
    char ifname[64] = "", ip[64] = "";
    long generation = -1;
    const char *path = argc > 1 ? argv[1] : "";
    for (int i = 0; argc > 1 && i < 300; i++) {
        size_t plen = strlen(argv[1]);
        if (plen && argv[1][plen - 1] == '/') {
            found[0] = 0;
            nftw(argv[1], pick, 8, FTW_PHYS);
            path = found;
        }
        FILE *f = path[0] ? fopen(path, "r") : NULL;
        size_t len = 0;
        if (f) {
            len = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
        }
        buf[len] = 0;
        const char *nd = strstr(buf, "\"networkData\"");
        if (nd && json_string(nd, "interfaceName", ifname, sizeof ifname)) {
            const char *ips = strstr(nd, "\"ips\":");
            /* the first element of "ips": the string after the '[' */
            if (ips) {
                const char *q = strchr(ips, '"');
                q = q ? strchr(q + 1, '"') : NULL; /* end of "ips" */
                q = q ? strchr(q + 1, '"') : NULL; /* start of the first element */
                const char *e = q ? strchr(q + 1, '"') : NULL;
                if (q && e && (size_t)(e - q - 1) < sizeof ip) {
                    memcpy(ip, q + 1, (size_t)(e - q - 1));
                    ip[e - q - 1] = 0;
                }
            }
            generation = json_int(buf, "generation");
            break;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    char kernel[1024] = "";
    struct ifaddrs *ifa = NULL;
    if (ifname[0] && getifaddrs(&ifa) == 0) {
        for (struct ifaddrs *a = ifa; a; a = a->ifa_next) {
            if (!a->ifa_addr || strcmp(a->ifa_name, ifname) != 0) continue;
            char s[INET6_ADDRSTRLEN] = "";
            if (a->ifa_addr->sa_family == AF_INET)
                inet_ntop(AF_INET, &((struct sockaddr_in *)a->ifa_addr)->sin_addr, s, sizeof s);
            else if (a->ifa_addr->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ifa_addr)->sin6_addr, s, sizeof s);
            if (s[0] && strlen(kernel) + strlen(s) + 2 < sizeof kernel) {
                if (kernel[0]) strcat(kernel, ",");
                strcat(kernel, s);
            }
        }
        freeifaddrs(ifa);
    }
    if (ifname[0])
        printf("METADATA ifname=%s ip=%s generation=%ld kernel=%s file=%s\n", ifname, ip, generation, kernel, path);
    else
        printf("METADATA missing: no networkData in %s after 30s: %.2000s\n", argc > 1 ? argv[1] : "(no path)", buf);
    fflush(stdout);
    for (;;) pause();
}
