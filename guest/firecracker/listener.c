/* sandbox-guest: the listener inside a Firecracker guest.
 *
 * Implements the contract in docs/backends/firecracker-guest.md: accept connections on a
 * vsock port (any CID), one child per connection; read `RUN <argc>\n` and the
 * length-prefixed arguments, run them with stdout and stderr in one pipe, stream
 * `OUT <n>\n<bytes>` frames, end with `EXIT <status>\n`. A request it cannot read
 * gets `ERR <why>\n`; end-of-file before a request is closed without a word.
 *
 *   sandbox-guest [--port N]      vsock, VMADDR_CID_ANY, port N (default 52)
 *   sandbox-guest --unix PATH     a Unix socket instead (tests); same bytes from RUN on
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o sandbox-guest listener.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 256
#define MAX_ARG_LEN 65536
#define GUEST_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Buffered reads from the connection. */
static int conn;
static char inbuf[65536];
static size_t inpos, inlen;

/* The next byte, or -1 at end-of-file (or a read error, which ends the request the same way). */
static int next_byte(void) {
    if (inpos == inlen) {
        ssize_t n;
        do n = read(conn, inbuf, sizeof inbuf);
        while (n < 0 && errno == EINTR);
        if (n <= 0) return -1;
        inpos = 0;
        inlen = (size_t)n;
    }
    return (unsigned char)inbuf[inpos++];
}

/* Exactly n bytes into dst; -1 at end-of-file first. */
static int read_bytes(char *dst, size_t n) {
    while (n > 0) {
        if (inpos == inlen) {
            int c = next_byte(); /* refills the buffer */
            if (c < 0) return -1;
            *dst++ = (char)c;
            n--;
            continue;
        }
        size_t take = inlen - inpos < n ? inlen - inpos : n;
        memcpy(dst, inbuf + inpos, take);
        inpos += take;
        dst += take;
        n -= take;
    }
    return 0;
}

static int send_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(conn, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void fail_request(const char *why) {
    char line[128];
    int n = snprintf(line, sizeof line, "ERR %s\n", why);
    send_all(line, (size_t)n);
    _exit(1);
}

/* Reads "<digits>\n" as a number up to max; prefix (e.g. "RUN ") must come first.
 * Returns -2 at end-of-file before its first byte. */
static long read_number_line(const char *prefix, long max, const char *what) {
    char why[96];
    int c = next_byte();
    if (c < 0) return -2;
    for (const char *p = prefix; *p; p++, c = next_byte()) {
        if (c < 0) fail_request("end of file inside the request");
        if (c != *p) fail_request("bad header, expected RUN <argc>");
    }
    long value = 0;
    int digits = 0;
    for (; c >= '0' && c <= '9'; c = next_byte(), digits++) {
        value = value * 10 + (c - '0');
        if (value > max) {
            snprintf(why, sizeof why, "%s over %ld", what, max);
            fail_request(why);
        }
    }
    if (c < 0) fail_request("end of file inside the request");
    if (digits == 0 || c != '\n') {
        snprintf(why, sizeof why, "bad %s, expected digits and a newline", what);
        fail_request(why);
    }
    return value;
}

/* Child of the connection's child: becomes the command, or says why it cannot on `out`. */
static void run_command(char **argv, int out) {
    for (int sig = 1; sig < NSIG; sig++) /* init's shell started us with SIGINT ignored */
        signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setpgid(0, 0); /* so that a lost connection can end the command and what it started */
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 || chdir("/") < 0) {
        dprintf(out, "sandbox-guest: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    execvp(argv[0], argv);
    dprintf(2, "sandbox-guest: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Output frames are built in place: the header just before the bytes. */
static char frame[32 + 65536];
#define FRAME_DATA (frame + 32)

static int send_frame(size_t n) {
    char head[32];
    int h = snprintf(head, sizeof head, "OUT %zu\n", n);
    memcpy(FRAME_DATA - h, head, (size_t)h);
    return send_all(FRAME_DATA - h, (size_t)h + n);
}

static void send_exit(int status) {
    char line[32];
    int n = snprintf(line, sizeof line, "EXIT %d\n", status);
    send_all(line, (size_t)n);
    _exit(0);
}

static void cannot_run(const char *name, const char *why) {
    size_t n = (size_t)snprintf(FRAME_DATA, 65536, "sandbox-guest: cannot run %s: %s\n", name, why);
    if (n >= 65536) { /* a name that long is cut, the line still ends */
        n = 65536;
        FRAME_DATA[n - 1] = '\n';
    }
    send_frame(n);
    send_exit(127);
}

/* One connection, in its own process. */
static void serve(void) {
    long argc = read_number_line("RUN ", MAX_ARGS, "argc");
    if (argc == -2) _exit(0); /* end-of-file before a request: a readiness check */
    if (argc < 1) fail_request("argc must be at least 1");
    char **argv = calloc((size_t)argc + 1, sizeof *argv);
    if (!argv) fail_request("out of memory");
    long nul_arg = 0;
    for (long i = 0; i < argc; i++) {
        long len = read_number_line("", MAX_ARG_LEN, "argument length");
        if (len == -2) fail_request("end of file inside the request");
        if (!(argv[i] = malloc((size_t)len + 1))) fail_request("out of memory");
        if (read_bytes(argv[i], (size_t)len) < 0) fail_request("end of file inside the request");
        argv[i][len] = '\0';
        if (!nul_arg && memchr(argv[i], '\0', (size_t)len)) nul_arg = i + 1;
    }

    char why[64];
    if (nul_arg) {
        snprintf(why, sizeof why, "argument %ld has a NUL byte", nul_arg);
        cannot_run(argv[0], why);
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) cannot_run(argv[0], strerror(errno));
    pid_t pid = fork();
    if (pid < 0) cannot_run(argv[0], strerror(errno));
    if (pid == 0) run_command(argv, pipefd[1]);
    setpgid(pid, pid); /* as the child does: whichever runs first */
    close(pipefd[1]);

    for (;;) {
        ssize_t n = read(pipefd[0], FRAME_DATA, 65536);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (send_frame((size_t)n) < 0) {
            kill(-pid, SIGKILL); /* nobody is listening any more */
            kill(pid, SIGKILL);
            break;
        }
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) _exit(1);
    send_exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
}

static void reap(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static void usage(void) {
    fprintf(stderr, "usage: sandbox-guest [--port N | --unix PATH]\n");
    exit(2);
}

int main(int argc, char **argv) {
    long port = 52;
    const char *unix_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            port = strtol(argv[++i], &end, 10);
            if (*argv[i] == '\0' || *end != '\0' || port < 0 || port > 0xffffffffL) usage();
        } else if (strcmp(argv[i], "--unix") == 0 && i + 1 < argc) {
            unix_path = argv[++i];
        } else {
            usage();
        }
    }
    setenv("PATH", GUEST_PATH, 1);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = reap;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);

    int listener;
    if (unix_path) {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        if (strlen(unix_path) >= sizeof addr.sun_path) usage();
        strcpy(addr.sun_path, unix_path);
        unlink(unix_path);
        listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) {
            fprintf(stderr, "sandbox-guest: cannot listen on %s: %s\n", unix_path, strerror(errno));
            return 1;
        }
    } else {
        struct sockaddr_vm addr = {
            .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)port};
        listener = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) {
            fprintf(stderr, "sandbox-guest: cannot listen on vsock port %ld: %s\n", port,
                    strerror(errno));
            return 1;
        }
    }
    if (listen(listener, 128) < 0) {
        fprintf(stderr, "sandbox-guest: listen: %s\n", strerror(errno));
        return 1;
    }
    if (unix_path)
        fprintf(stderr, "sandbox-guest: listening on %s\n", unix_path);
    else
        fprintf(stderr, "sandbox-guest: listening on vsock port %ld\n", port);

    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                fprintf(stderr, "sandbox-guest: accept: %s\n", strerror(errno));
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGCHLD, SIG_DFL); /* this child waits for its own command */
            close(listener);
            conn = fd;
            serve();
        }
        if (pid < 0) fprintf(stderr, "sandbox-guest: fork: %s\n", strerror(errno));
        close(fd);
    }
}
