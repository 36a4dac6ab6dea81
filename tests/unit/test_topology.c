/* CPU topology from a made-up /sys and /proc: physical cores counted once
 * across SMT siblings, core-first CPU order, the default thread counts and
 * the tensor-parallel ranks' shares of the cores. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "plan/plan.h"

static char g_root[64];

/* writes root/path (parents made), printf-style contents */
static void put(const char *path, const char *fmt, ...) {
    char full[512];
    snprintf(full, sizeof full, "%s/%s", g_root, path);
    for (char *s = strchr(full + strlen(g_root) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        mkdir(full, 0755);
        *s = '/';
    }
    FILE *f = fopen(full, "w");
    if (!f) {
        perror(full);
        exit(1);
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

static void fresh_root(void) {
    if (g_root[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
        if (system(cmd) != 0) exit(1);
    }
    snprintf(g_root, sizeof g_root, "/tmp/clv-topo-XXXXXX");
    if (!mkdtemp(g_root)) exit(1);
    put("proc/meminfo", "MemTotal: 100 kB\nMemAvailable: 4096 kB\n");
}

static void siblings(int cpu, const char *list) {
    char p[128];
    snprintf(p, sizeof p, "sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", cpu);
    put(p, "%s\n", list);
}

static bool same(const int *got, const int *want, int n) { return memcmp(got, want, sizeof(int) * (size_t)n) == 0; }

static clv_topology g_t;

int main(void) {
    clv_status st = {0};

    /* one node, 4 cores x 2 threads numbered as Linux does on Intel: cpu K and K+4 */
    fresh_root();
    put("sys/devices/system/cpu/online", "0-7\n");
    for (int c = 0; c < 8; c++) {
        char l[32];
        snprintf(l, sizeof l, "%d,%d", c % 4, c % 4 + 4);
        siblings(c, l);
    }
    put("sys/devices/system/node/node0/cpulist", "0-7\n");
    CHECK(clv_topology_detect_at(&g_t, g_root, &st) == 0, "%s", st.msg);
    CHECK(g_t.n_cpus == 8 && g_t.n_cores == 4, "cpus %d cores %d", g_t.n_cpus, g_t.n_cores);
    CHECK(same(g_t.cpus, (int[]){0, 1, 2, 3, 4, 5, 6, 7}, 8), "order");
    CHECK(!g_t.numa && g_t.n_groups == 4, "groups %d", g_t.n_groups);
    CHECK(g_t.group_ncpus[1] == 2 && same(g_t.group_cpus[1], (int[]){1, 5}, 2), "cpu:1 is core 1 with its sibling");
    CHECK(g_t.group_ncores[1] == 1, "cpu:1 has one core");
    CHECK(clv_topology_threads(&g_t, -1) == 4, "default threads %d, want the 4 cores", clv_topology_threads(&g_t, -1));
    CHECK(clv_topology_threads(&g_t, 2) == 1, "cpu:2 threads");
    CHECK(g_t.mem_available == 4096 * 1024, "MemAvailable");
    int out[16], cores = 0, n;
    n = clv_topology_share(&g_t, 1, 2, out, &cores);
    CHECK(n == 4 && cores == 2 && same(out, (int[]){2, 3, 6, 7}, 4), "rank 1 of 2: n %d cores %d", n, cores);
    n = clv_topology_share(&g_t, 0, 3, out, &cores); /* 4 cores in 3 parts: one each, core 3 unused */
    CHECK(n == 2 && cores == 1 && same(out, (int[]){0, 4}, 2), "rank 0 of 3: n %d", n);
    n = clv_topology_share(&g_t, 2, 3, out, &cores);
    CHECK(n == 2 && same(out, (int[]){2, 6}, 2), "rank 2 of 3: n %d", n);
    CHECK(clv_topology_share(&g_t, 0, 5, out, &cores) == 0, "5 ranks on 4 cores share nothing");

    /* two NUMA nodes, siblings adjacent (0,1), (2,3), ... */
    fresh_root();
    put("sys/devices/system/cpu/online", "0-7\n");
    for (int c = 0; c < 8; c++) {
        char l[32];
        snprintf(l, sizeof l, "%d-%d", c & ~1, (c & ~1) + 1);
        siblings(c, l);
    }
    put("sys/devices/system/node/node0/cpulist", "0-3\n");
    put("sys/devices/system/node/node1/cpulist", "4-7\n");
    CHECK(clv_topology_detect_at(&g_t, g_root, &st) == 0, "%s", st.msg);
    CHECK(g_t.n_cores == 4, "cores %d", g_t.n_cores);
    CHECK(same(g_t.cpus, (int[]){0, 2, 4, 6, 1, 3, 5, 7}, 8), "cores first: %d %d %d %d", g_t.cpus[0], g_t.cpus[1],
          g_t.cpus[2], g_t.cpus[3]);
    CHECK(same(g_t.cpu_core, (int[]){0, 2, 4, 6, 0, 2, 4, 6}, 8), "cores of the ordered cpus");
    CHECK(g_t.numa && g_t.n_groups == 2, "numa groups %d", g_t.n_groups);
    CHECK(g_t.group_ncpus[1] == 4 && same(g_t.group_cpus[1], (int[]){4, 6, 5, 7}, 4), "node 1 cores first");
    CHECK(clv_topology_threads(&g_t, 0) == 2 && clv_topology_threads(&g_t, 1) == 2, "a node's threads: its cores");
    CHECK(clv_topology_threads(&g_t, -1) == 4, "cpu threads");
    n = clv_topology_share(&g_t, 1, 2, out, &cores);
    CHECK(n == 4 && cores == 2 && same(out, (int[]){4, 6, 5, 7}, 4), "rank 1 of 2 takes node 1's cores: n %d", n);

    /* a container without topology files: every online CPU is a core */
    fresh_root();
    put("sys/devices/system/cpu/online", "0-2\n");
    CHECK(clv_topology_detect_at(&g_t, g_root, &st) == 0, "%s", st.msg);
    CHECK(g_t.n_cpus == 3 && g_t.n_cores == 3 && !g_t.numa && g_t.n_groups == 3, "cores %d groups %d", g_t.n_cores,
          g_t.n_groups);
    CHECK(clv_topology_threads(&g_t, -1) == 3, "threads");

    /* a sibling that is offline still ties its core's online CPUs together */
    fresh_root();
    put("sys/devices/system/cpu/online", "1-3\n");
    siblings(1, "0-1"), siblings(2, "2,3"), siblings(3, "2-3");
    CHECK(clv_topology_detect_at(&g_t, g_root, &st) == 0, "%s", st.msg);
    CHECK(g_t.n_cores == 2 && same(g_t.cpus, (int[]){1, 2, 3}, 3), "cores %d", g_t.n_cores);

    /* no MemAvailable: an error naming the file */
    fresh_root();
    put("proc/meminfo", "MemTotal: 100 kB\n");
    int rc = clv_topology_detect_at(&g_t, g_root, &st);
    CHECK_ERR(rc, st, "MemAvailable");
    CHECK_ERR(rc, st, "/proc/meminfo");

    /* this machine: at least one core, never more cores than CPUs */
    CHECK(clv_topology_detect(&g_t, &st) == 0, "%s", st.msg);
    CHECK(g_t.n_cores >= 1 && g_t.n_cores <= g_t.n_cpus, "cores %d cpus %d", g_t.n_cores, g_t.n_cpus);

    fresh_root();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
    if (system(cmd) != 0) return 1;
    return check_report("test_topology");
}
