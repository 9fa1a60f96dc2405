// peak_rss COMMAND [ARGS...]: runs the command and prints its peak resident set in KiB (the
// rusage maxrss of the child) on stdout; exits with the command's status. Spawned from this small
// program rather than from Python, because a child's maxrss also covers the memory of the process
// it was forked from, up to the exec.
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: peak_rss COMMAND [ARGS...]\n");
    return 2;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(stderr, "peak_rss: fork: %s\n", std::strerror(errno));
    return 2;
  }
  if (pid == 0) {
    ::execvp(argv[1], argv + 1);
    std::fprintf(stderr, "peak_rss: cannot run %s: %s\n", argv[1], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  struct rusage usage {};
  while (::wait4(pid, &status, 0, &usage) < 0)
    if (errno != EINTR) {
      std::fprintf(stderr, "peak_rss: wait4: %s\n", std::strerror(errno));
      return 2;
    }
  std::printf("%ld\n", usage.ru_maxrss);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  std::fprintf(stderr, "peak_rss: %s ended by signal %d\n", argv[1], WTERMSIG(status));
  return 2;
}
