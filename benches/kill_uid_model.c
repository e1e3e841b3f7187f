/* What a reap of a chroot-only run pays for killing its uid's leftovers (kill_uid in
 * src/runtime/sandbox/tree.rs), in a C model of the server: a process with MB megabytes
 * written and six threads starts a helper that takes a uid and sends SIGKILL to -1, as a
 * fork (VM=0, the helper until 2026-12-08) or sharing its memory (VM=1, CLONE_VM |
 * CLONE_VFORK, as now). It prints the helper's time and then the time the process takes
 * to write one page in eight of its memory afterwards (a fork leaves every page
 * write-protected, a fault on the next write to each). Needs root.
 *
 *   gcc -O2 -pthread benches/kill_uid_model.c -o /tmp/kill_uid_model
 *   sudo /tmp/kill_uid_model 3 0; sudo /tmp/kill_uid_model 3 1      (MB VM)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char stack[64 * 1024] __attribute__((aligned(16)));
static const int uid = 64003; /* a uid nothing runs as */

static int helper(void *arg) {
  (void)arg;
  if (syscall(SYS_setresgid, uid, uid, uid) == 0 && syscall(SYS_setresuid, uid, uid, uid) == 0)
    kill(-1, SIGKILL);
  return 0;
}

static void *idle(void *arg) {
  (void)arg;
  pause();
  return NULL;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MB VM(0|1)\n", argv[0]);
    return 2;
  }
  size_t size = (size_t)atoi(argv[1]) << 20;
  int vm = atoi(argv[2]);
  char *memory = malloc(size);
  memset(memory, 1, size);
  pthread_t thread;
  for (int i = 0; i < 5; i++) pthread_create(&thread, NULL, idle, NULL);
  const int rounds = 2000;
  double helper_us = 0, writes_us = 0;
  for (int i = 0; i < rounds; i++) {
    double start = now_us();
    int pid;
    if (vm) {
      pid = clone(helper, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
    } else {
      pid = (int)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
      if (pid == 0) _exit(helper(NULL));
    }
    int status;
    waitpid(pid, &status, 0);
    double done = now_us();
    helper_us += done - start;
    for (size_t off = 0; off < size; off += 8 * 4096) memory[off]++;
    writes_us += now_us() - done;
  }
  printf("%s MB, %s: helper %.1f us, writing one page in eight after it %.1f us\n", argv[1],
         vm ? "CLONE_VM | CLONE_VFORK" : "fork", helper_us / rounds, writes_us / rounds);
  return 0;
}
