/*
 * loadgen: a fixed Kafka produce workload on the system librdkafka, for benchmarking loggate.
 *
 * N producer threads, each with its own rd_kafka_t (one connection each), send realistic
 * records (a log line of the given size, or for --json a JSON object of about 8 fields) for a
 * count or a duration, optionally paced to a total target rate. Latency is measured per
 * record from produce() to its delivery report; librdkafka's own broker round-trip time
 * (the "rtt" window of its statistics) is reported as well, which is the time a Produce
 * request spent on the wire and in the server. --idle M adds M more producer instances
 * (connections) that each send one record every --idle-interval-ms, driven by one thread.
 *
 * Output (stdout): a line {"event":"ready"} once every instance is connected and the
 * measured phase starts, then one JSON summary line after the last delivery report of the
 * measured phase. Diagnostics go to stderr.
 *
 * Build: gcc -O2 -o bench/bin/loadgen bench/loadgen.c -lrdkafka -lpthread   (bench/build.sh)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

/* ---------- options ---------- */

static struct {
    const char *brokers;
    const char *security; /* PLAINTEXT | SASL_SSL | SASL_PLAINTEXT | SSL */
    const char *ca;
    const char *user;
    const char *password;
    const char *topic;
    int size;
    long count;       /* total records; 0 = use duration */
    double duration;  /* seconds */
    const char *codec;
    const char *acks;
    const char *linger_ms;
    const char *batch_size;
    double rate;      /* total records/s, 0 = as fast as possible */
    int producers;
    int json;
    int idle;
    int idle_interval_ms;
    int idempotence;
    int pool;         /* distinct payloads per thread */
    const char *extra[32];
    int nextra;
} opt = {
    .brokers = "127.0.0.1:9092",
    .security = "PLAINTEXT",
    .topic = "bench",
    .size = 200,
    .duration = 10,
    .codec = "lz4",
    .acks = "1",
    .linger_ms = "5",
    .batch_size = "1000000",
    .producers = 1,
    .idle_interval_ms = 1000,
    .pool = 4096,
};

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen [options]\n"
            "  --brokers H:P         bootstrap servers (127.0.0.1:9092)\n"
            "  --security P          PLAINTEXT | SASL_SSL | SASL_PLAINTEXT | SSL (PLAINTEXT)\n"
            "  --ca FILE             CA certificate for SSL\n"
            "  --user U --password P SASL/PLAIN credentials\n"
            "  --topic T             topic (bench); a name ending in .json gets JSON payloads\n"
            "  --size N              record value size in bytes (200)\n"
            "  --count N             total records (else --duration)\n"
            "  --duration S          seconds of producing (10)\n"
            "  --codec C             none|gzip|snappy|lz4|zstd (lz4)\n"
            "  --acks A              0|1|-1 (1)\n"
            "  --linger-ms N         linger.ms (5)\n"
            "  --batch-size N        batch.size in bytes (1000000)\n"
            "  --rate R              total records/s target, 0 = unlimited (0)\n"
            "  --producers N         loaded producer instances, one thread each (1)\n"
            "  --json                JSON object payloads (also implied by a .json topic)\n"
            "  --idle M              extra producer instances sending a trickle (0)\n"
            "  --idle-interval-ms N  each idle instance sends one record this often (1000)\n"
            "  --idempotence         enable.idempotence=true\n"
            "  -X key=value          any other librdkafka property (repeatable)\n");
    exit(2);
}

/* ---------- time ---------- */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns) {
    struct timespec ts = {.tv_sec = ns / 1000000000ull, .tv_nsec = ns % 1000000000ull};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* ---------- log-linear latency histogram (microseconds, < 1 % error) ---------- */

#define SUB 128
#define NBUCKETS (SUB + 50 * 64)

typedef struct {
    uint64_t b[NBUCKETS];
    uint64_t n;
    uint64_t max;
} hist_t;

static inline int bucket_of(uint64_t v) {
    if (v < SUB)
        return (int)v;
    int shift = 63 - __builtin_clzll(v) - 6; /* v >> shift in [64, 127] */
    int i = SUB + (shift - 1) * 64 + (int)((v >> shift) - 64);
    return i < NBUCKETS ? i : NBUCKETS - 1;
}

static inline double bucket_value(int i) {
    if (i < SUB)
        return i;
    int shift = (i - SUB) / 64 + 1;
    uint64_t lo = ((uint64_t)((i - SUB) % 64 + 64)) << shift;
    return (double)lo + (double)(1ull << shift) / 2.0;
}

static inline void hist_add(hist_t *h, uint64_t us) {
    h->b[bucket_of(us)]++;
    h->n++;
    if (us > h->max)
        h->max = us;
}

static void hist_merge(hist_t *into, const hist_t *h) {
    for (int i = 0; i < NBUCKETS; i++)
        into->b[i] += h->b[i];
    into->n += h->n;
    if (h->max > into->max)
        into->max = h->max;
}

/* Value (ms) at quantile q. */
static double hist_ms(const hist_t *h, double q) {
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    uint64_t seen = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank) {
            double v = bucket_value(i);
            if (v > (double)h->max)
                v = (double)h->max;
            return v / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

/* ---------- payloads ---------- */

static const char *WORDS[] = {
    "request", "completed", "user",   "session", "cache",    "miss",    "upstream", "timeout",
    "retry",   "order",     "payment", "queued", "handler",  "db",      "query",    "took",
    "rows",    "connection", "pool",  "acquired", "released", "token",  "refresh",  "invalid",
    "shipping", "inventory", "sku",   "warehouse", "region", "eu-west", "us-east",  "checkout",
};
static const char *LEVELS[] = {"INFO", "INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR", "INFO"};
static const char *SERVICES[] = {"checkout", "cart", "auth", "search", "catalog", "billing"};
static const char *PATHS[] = {"/api/v1/orders", "/api/v1/cart/items", "/login", "/search",
                              "/api/v2/catalog/products", "/healthz"};

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Appends words until `len` reaches `size`; the last word is cut to fit. */
static int pad_words(char *buf, int len, int size, uint64_t *rng) {
    while (len < size) {
        const char *w = WORDS[rng_next(rng) % (sizeof WORDS / sizeof *WORDS)];
        int n = snprintf(buf + len, (size_t)(size - len + 1), " %s", w);
        len += n > size - len ? size - len : n;
    }
    return size;
}

/* A log line of exactly `size` bytes. */
static void make_line(char *buf, int size, uint64_t *rng, long seq) {
    char head[512];
    uint64_t r = rng_next(rng);
    int n = snprintf(head, sizeof head,
                     "2026-11-23T20:%02d:%02d.%03dZ %s [%s-%d] %s %s status=%d bytes=%d dur_ms=%d.%d "
                     "trace=%016" PRIx64 " seq=%ld",
                     (int)(r % 60), (int)((r >> 6) % 60), (int)((r >> 12) % 1000),
                     LEVELS[(r >> 22) % 8], SERVICES[(r >> 25) % 6], (int)((r >> 28) % 16),
                     (r >> 32) % 5 ? "GET" : "POST", PATHS[(r >> 35) % 6],
                     (r >> 38) % 10 ? 200 : 503, (int)((r >> 40) % 50000), (int)((r >> 50) % 900),
                     (int)((r >> 60) % 10), rng_next(rng), seq);
    if (n > size)
        n = size;
    memcpy(buf, head, (size_t)n);
    buf[n] = 0;
    pad_words(buf, n, size, rng);
}

/* A JSON object of 8 fields, exactly `size` bytes when size >= ~190 (else as short as it gets). */
static int make_json(char *buf, int size, uint64_t *rng, long seq) {
    uint64_t r = rng_next(rng);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "{\"ts\":\"2026-11-23T20:%02d:%02d.%03dZ\",\"level\":\"%s\",\"service\":\"%s\","
                     "\"host\":\"web-%02d\",\"trace_id\":\"%016" PRIx64 "\",\"status\":%d,"
                     "\"latency_ms\":%d.%d,\"msg\":\"%s %s seq=%ld",
                     (int)(r % 60), (int)((r >> 6) % 60), (int)((r >> 12) % 1000),
                     LEVELS[(r >> 22) % 8], SERVICES[(r >> 25) % 6], (int)((r >> 28) % 16),
                     rng_next(rng), (r >> 38) % 10 ? 200 : 503, (int)((r >> 40) % 900),
                     (int)((r >> 50) % 10), (r >> 32) % 5 ? "GET" : "POST", PATHS[(r >> 35) % 6], seq);
    int body = size - 2; /* room for the closing "} */
    if (n > body)
        body = n;
    memcpy(buf, head, (size_t)n);
    buf[n] = 0;
    pad_words(buf, n, body, rng);
    buf[body] = '"';
    buf[body + 1] = '}';
    buf[body + 2] = 0;
    return body + 2;
}

typedef struct {
    char *data;
    int *len;
    int n;
    int stride;
} pool_t;

static void pool_init(pool_t *p, int n, int size, int json, uint64_t seed) {
    p->n = n;
    p->stride = size + 512;
    p->data = malloc((size_t)n * (size_t)p->stride);
    p->len = malloc((size_t)n * sizeof(int));
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < n; i++) {
        char *buf = p->data + (size_t)i * (size_t)p->stride;
        if (json) {
            p->len[i] = make_json(buf, size, &rng, i);
        } else {
            make_line(buf, size, &rng, i);
            p->len[i] = size;
        }
    }
}

/* ---------- producer instances ---------- */

typedef struct {
    int id;
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    pool_t pool;
    hist_t hist;
    long quota; /* records to send in count mode */
    long sent, delivered, errors;
    uint64_t bytes_delivered;
    uint64_t last_delivery_ns;
    /* rtt statistics aggregated over windows */
    uint64_t rtt_cnt;
    double rtt_p50_w, rtt_p99_w, rtt_p9999_w; /* cnt-weighted sums (us) */
    double rtt_p99_max;
    char first_error[256];
} producer_t;

static atomic_int stop_flag;
static pthread_barrier_t connected_barrier, start_barrier;
static uint64_t t_start_ns;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    producer_t *p = opaque;
    uint64_t now = now_ns();
    if (m->err) {
        if (p->errors++ == 0)
            snprintf(p->first_error, sizeof p->first_error, "%s", rd_kafka_err2str(m->err));
        return;
    }
    uint64_t t0 = (uint64_t)(uintptr_t)m->_private;
    p->delivered++;
    p->bytes_delivered += m->len;
    p->last_delivery_ns = now;
    hist_add(&p->hist, (now - t0) / 1000);
}

/* Numeric value of "key": after `from` but before `end`. */
static double json_num(const char *from, const char *end, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *s = strstr(from, pat);
    if (!s || s > end)
        return 0;
    return strtod(s + strlen(pat), NULL);
}

/* librdkafka statistics: take the broker "rtt" windows (us) of this interval. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    (void)rk;
    (void)len;
    producer_t *p = opaque;
    const char *s = json;
    while ((s = strstr(s, "\"rtt\":")) != NULL) {
        s += 6;
        while (*s == ' ')
            s++;
        if (*s != '{')
            continue;
        const char *end = strchr(s, '}');
        if (!end)
            break;
        double cnt = json_num(s, end, "cnt");
        if (cnt > 0) {
            double p99 = json_num(s, end, "p99");
            p->rtt_cnt += (uint64_t)cnt;
            p->rtt_p50_w += cnt * json_num(s, end, "p50");
            p->rtt_p99_w += cnt * p99;
            p->rtt_p9999_w += cnt * json_num(s, end, "p99_99");
            if (p99 > p->rtt_p99_max)
                p->rtt_p99_max = p99;
        }
        s = end;
    }
    return 0;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    if (level <= 4)
        fprintf(stderr, "loadgen: rdkafka %s: %s\n", fac, buf);
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
    char err[512];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "loadgen: %s=%s: %s\n", k, v, err);
        exit(2);
    }
}

static void producer_init(producer_t *p, int id, int loaded) {
    memset(p, 0, sizeof *p);
    p->id = id;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char buf[64];
    set(conf, "bootstrap.servers", opt.brokers);
    set(conf, "security.protocol", opt.security);
    if (strstr(opt.security, "SASL")) {
        set(conf, "sasl.mechanisms", "PLAIN");
        set(conf, "sasl.username", opt.user ? opt.user : "");
        set(conf, "sasl.password", opt.password ? opt.password : "");
    }
    if (strstr(opt.security, "SSL") && opt.ca)
        set(conf, "ssl.ca.location", opt.ca);
    set(conf, "compression.codec", opt.codec);
    set(conf, "acks", opt.acks);
    set(conf, "linger.ms", opt.linger_ms);
    set(conf, "batch.size", opt.batch_size);
    set(conf, "batch.num.messages", "1000000");
    set(conf, "queue.buffering.max.messages", loaded ? "2000000" : "1000");
    /* 32 MiB of queued records per instance, like the Java producer's buffer.memory, so an
     * unpaced (peak) run measures throughput without seconds of client-side queueing. */
    set(conf, "queue.buffering.max.kbytes", loaded ? "32768" : "1024");
    set(conf, "message.timeout.ms", "60000");
    set(conf, "enable.idempotence", opt.idempotence ? "true" : "false");
    set(conf, "log.connection.close", "false");
    if (loaded) {
        set(conf, "statistics.interval.ms", "1000");
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
    }
    for (int i = 0; i < opt.nextra; i++) {
        char kv[512];
        snprintf(kv, sizeof kv, "%s", opt.extra[i]);
        char *eq = strchr(kv, '=');
        if (!eq)
            usage();
        *eq = 0;
        set(conf, kv, eq + 1);
    }
    snprintf(buf, sizeof buf, "loadgen-%d", id);
    set(conf, "client.id", buf);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_opaque(conf, p);
    char err[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!p->rk) {
        fprintf(stderr, "loadgen: rd_kafka_new: %s\n", err);
        exit(1);
    }
    p->rkt = rd_kafka_topic_new(p->rk, opt.topic, NULL);
    pool_init(&p->pool, loaded ? opt.pool : 16, opt.size, opt.json, (uint64_t)id + 1);
}

/* Blocks until the instance has its metadata (so its connection and SASL are done). */
static void producer_connect(producer_t *p) {
    const struct rd_kafka_metadata *md;
    for (int attempt = 0;; attempt++) {
        rd_kafka_resp_err_t e = rd_kafka_metadata(p->rk, 0, p->rkt, &md, 10000);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            int ok = md->topic_cnt == 1 && md->topics[0].err == 0;
            if (!ok && attempt == 0)
                fprintf(stderr, "loadgen: topic %s: %s\n", opt.topic,
                        rd_kafka_err2str(md->topic_cnt ? md->topics[0].err : e));
            rd_kafka_metadata_destroy(md);
            if (ok)
                return;
        } else {
            fprintf(stderr, "loadgen: metadata: %s\n", rd_kafka_err2str(e));
        }
        if (attempt >= 5) {
            fprintf(stderr, "loadgen: instance %d could not connect\n", p->id);
            exit(1);
        }
        sleep_ns(500000000ull);
    }
}

static inline int produce_one(producer_t *p, long seq) {
    int i = (int)(seq % p->pool.n);
    char *v = p->pool.data + (size_t)i * (size_t)p->pool.stride;
    void *ts = (void *)(uintptr_t)now_ns();
    for (;;) {
        if (rd_kafka_produce(p->rkt, RD_KAFKA_PARTITION_UA, 0, v, (size_t)p->pool.len[i], NULL, 0,
                             ts) == 0)
            return 0;
        rd_kafka_resp_err_t e = rd_kafka_last_error();
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (p->errors++ == 0)
                snprintf(p->first_error, sizeof p->first_error, "produce: %s", rd_kafka_err2str(e));
            return -1;
        }
        rd_kafka_poll(p->rk, 1);
    }
}

static void *producer_thread(void *arg) {
    producer_t *p = arg;
    producer_connect(p);
    pthread_barrier_wait(&connected_barrier);
    pthread_barrier_wait(&start_barrier); /* t_start_ns is set between the two */
    uint64_t start = t_start_ns;
    uint64_t end = opt.count ? UINT64_MAX : start + (uint64_t)(opt.duration * 1e9);
    double rate = opt.rate > 0 ? opt.rate / opt.producers : 0;
    long seq = 0;
    for (;;) {
        if (opt.count && seq >= p->quota)
            break;
        if ((seq & 63) == 0) {
            uint64_t now = now_ns();
            if (now >= end || atomic_load(&stop_flag))
                break;
            rd_kafka_poll(p->rk, 0);
        }
        if (rate > 0) {
            uint64_t now = now_ns();
            double due = (double)(now - start) * 1e-9 * rate;
            if ((double)seq >= due) {
                /* Ahead of schedule: sleep (never spin: the server shares these 2 cores),
                 * at least 0.5 ms, then send whatever fell due in one burst. */
                uint64_t next = start + (uint64_t)(((double)seq + 1) / rate * 1e9);
                uint64_t wait = next > now ? next - now : 0;
                if (wait < 500000)
                    wait = 500000;
                if (wait > 5000000)
                    wait = 5000000;
                rd_kafka_poll(p->rk, 0);
                sleep_ns(wait);
                if (now >= end || atomic_load(&stop_flag))
                    break;
                continue;
            }
        }
        if (produce_one(p, seq) == 0)
            p->sent++;
        seq++;
    }
    rd_kafka_flush(p->rk, 120000);
    return NULL;
}

/* Idle instances: each sends one record every idle_interval_ms; one thread drives them all. */
static producer_t *idle_p;
static atomic_int idle_done;

static void *idle_thread(void *arg) {
    (void)arg;
    uint64_t interval = (uint64_t)opt.idle_interval_ms * 1000000ull;
    uint64_t *next = calloc((size_t)opt.idle, sizeof *next);
    uint64_t base = now_ns();
    for (int i = 0; i < opt.idle; i++) /* spread the sends over the interval */
        next[i] = base + interval * (uint64_t)i / (uint64_t)opt.idle;
    long seq = 0;
    while (!atomic_load(&idle_done)) {
        uint64_t now = now_ns();
        for (int i = 0; i < opt.idle; i++) {
            producer_t *p = &idle_p[i];
            if (now >= next[i]) {
                if (produce_one(p, seq++) == 0)
                    p->sent++;
                next[i] += interval;
            }
            rd_kafka_poll(p->rk, 0);
        }
        sleep_ns(2000000);
    }
    free(next);
    return NULL;
}

static void *connect_thread(void *arg) {
    long *range = arg; /* [from, to) */
    for (long i = range[0]; i < range[1]; i++)
        producer_connect(&idle_p[i]);
    return NULL;
}

static void on_signal(int sig) {
    (void)sig;
    atomic_store(&stop_flag, 1);
}

int main(int argc, char **argv) {
    static struct option longopts[] = {
        {"brokers", 1, 0, 'b'},    {"security", 1, 0, 's'},     {"ca", 1, 0, 'c'},
        {"user", 1, 0, 'u'},       {"password", 1, 0, 'p'},     {"topic", 1, 0, 't'},
        {"size", 1, 0, 'S'},       {"count", 1, 0, 'n'},        {"duration", 1, 0, 'd'},
        {"codec", 1, 0, 'z'},      {"acks", 1, 0, 'a'},         {"linger-ms", 1, 0, 'l'},
        {"batch-size", 1, 0, 'B'}, {"rate", 1, 0, 'r'},         {"producers", 1, 0, 'P'},
        {"json", 0, 0, 'j'},       {"idle", 1, 0, 'i'},         {"idle-interval-ms", 1, 0, 'I'},
        {"idempotence", 0, 0, 'E'}, {"help", 0, 0, 'h'},        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "X:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': opt.brokers = optarg; break;
        case 's': opt.security = optarg; break;
        case 'c': opt.ca = optarg; break;
        case 'u': opt.user = optarg; break;
        case 'p': opt.password = optarg; break;
        case 't': opt.topic = optarg; break;
        case 'S': opt.size = atoi(optarg); break;
        case 'n': opt.count = atol(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'z': opt.codec = optarg; break;
        case 'a': opt.acks = optarg; break;
        case 'l': opt.linger_ms = optarg; break;
        case 'B': opt.batch_size = optarg; break;
        case 'r': opt.rate = atof(optarg); break;
        case 'P': opt.producers = atoi(optarg); break;
        case 'j': opt.json = 1; break;
        case 'i': opt.idle = atoi(optarg); break;
        case 'I': opt.idle_interval_ms = atoi(optarg); break;
        case 'E': opt.idempotence = 1; break;
        case 'X':
            if (opt.nextra < 32)
                opt.extra[opt.nextra++] = optarg;
            break;
        default: usage();
        }
    }
    if (optind != argc || opt.producers < 1 || opt.size < 1 || opt.idle < 0)
        usage();
    size_t tl = strlen(opt.topic);
    if (tl > 5 && strcmp(opt.topic + tl - 5, ".json") == 0)
        opt.json = 1;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    /* Idle instances first, connected in parallel (8 threads), so the measured phase runs
     * with all connections open. */
    pthread_t idle_tid = 0;
    uint64_t t_connect = now_ns();
    if (opt.idle > 0) {
        idle_p = calloc((size_t)opt.idle, sizeof *idle_p);
        for (int i = 0; i < opt.idle; i++)
            producer_init(&idle_p[i], 100000 + i, 0);
        enum { NC = 8 };
        pthread_t ct[NC];
        long ranges[NC][2];
        for (int t = 0; t < NC; t++) {
            ranges[t][0] = (long)opt.idle * t / NC;
            ranges[t][1] = (long)opt.idle * (t + 1) / NC;
            pthread_create(&ct[t], NULL, connect_thread, ranges[t]);
        }
        for (int t = 0; t < NC; t++)
            pthread_join(ct[t], NULL);
        pthread_create(&idle_tid, NULL, idle_thread, NULL);
        fprintf(stderr, "loadgen: %d idle instances connected in %.1f s\n", opt.idle,
                (double)(now_ns() - t_connect) / 1e9);
    }

    producer_t *ps = calloc((size_t)opt.producers, sizeof *ps);
    pthread_t *tids = calloc((size_t)opt.producers, sizeof *tids);
    pthread_barrier_init(&connected_barrier, NULL, (unsigned)opt.producers + 1);
    pthread_barrier_init(&start_barrier, NULL, (unsigned)opt.producers + 1);
    for (int i = 0; i < opt.producers; i++) {
        producer_init(&ps[i], i, 1);
        ps[i].quota = opt.count / opt.producers + (i < opt.count % opt.producers);
        pthread_create(&tids[i], NULL, producer_thread, &ps[i]);
    }
    pthread_barrier_wait(&connected_barrier);
    printf("{\"event\":\"ready\"}\n");
    fflush(stdout);
    t_start_ns = now_ns();
    pthread_barrier_wait(&start_barrier);
    for (int i = 0; i < opt.producers; i++)
        pthread_join(tids[i], NULL);

    hist_t *all = calloc(1, sizeof *all);
    long sent = 0, delivered = 0, errors = 0;
    uint64_t bytes = 0, last = t_start_ns, rtt_cnt = 0;
    double p50w = 0, p99w = 0, p9999w = 0, p99max = 0;
    const char *first_error = "";
    for (int i = 0; i < opt.producers; i++) {
        producer_t *p = &ps[i];
        hist_merge(all, &p->hist);
        sent += p->sent;
        delivered += p->delivered;
        errors += p->errors;
        bytes += p->bytes_delivered;
        if (p->last_delivery_ns > last)
            last = p->last_delivery_ns;
        rtt_cnt += p->rtt_cnt;
        p50w += p->rtt_p50_w;
        p99w += p->rtt_p99_w;
        p9999w += p->rtt_p9999_w;
        if (p->rtt_p99_max > p99max)
            p99max = p->rtt_p99_max;
        if (p->errors && !*first_error)
            first_error = p->first_error;
    }
    double secs = (double)(last - t_start_ns) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    double rc = rtt_cnt ? (double)rtt_cnt : 1;
    printf("{\"records\":%ld,\"sent\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"records_per_s\":%.0f,"
           "\"mb_per_s\":%.2f,\"value_bytes\":%" PRIu64 ",\"lat_ms\":{\"p50\":%.3f,\"p99\":%.3f,"
           "\"p999\":%.3f,\"max\":%.3f},\"rtt_ms\":{\"requests\":%" PRIu64 ",\"p50\":%.3f,"
           "\"p99\":%.3f,\"p9999\":%.3f,\"p99_max_window\":%.3f},\"producers\":%d,\"idle\":%d,"
           "\"codec\":\"%s\",\"acks\":\"%s\",\"size\":%d,\"json\":%s,\"topic\":\"%s\","
           "\"security\":\"%s\",\"first_error\":\"%s\"}\n",
           delivered, sent, errors, secs, (double)delivered / secs, (double)bytes / secs / 1e6, bytes,
           hist_ms(all, 0.50), hist_ms(all, 0.99), hist_ms(all, 0.999), (double)all->max / 1000.0,
           rtt_cnt, p50w / rc / 1000.0, p99w / rc / 1000.0, p9999w / rc / 1000.0, p99max / 1000.0,
           opt.producers, opt.idle, opt.codec, opt.acks, opt.size, opt.json ? "true" : "false",
           opt.topic, opt.security, first_error);
    fflush(stdout);

    if (opt.idle > 0) {
        atomic_store(&idle_done, 1);
        pthread_join(idle_tid, NULL);
        long isent = 0, idel = 0, ierr = 0;
        for (int i = 0; i < opt.idle; i++) {
            rd_kafka_flush(idle_p[i].rk, 10000);
            isent += idle_p[i].sent;
            idel += idle_p[i].delivered;
            ierr += idle_p[i].errors;
        }
        fprintf(stderr, "loadgen: idle instances sent %ld, delivered %ld, errors %ld\n", isent, idel,
                ierr);
        for (int i = 0; i < opt.idle; i++) {
            rd_kafka_topic_destroy(idle_p[i].rkt);
            rd_kafka_destroy(idle_p[i].rk);
        }
    }
    for (int i = 0; i < opt.producers; i++) {
        rd_kafka_topic_destroy(ps[i].rkt);
        rd_kafka_destroy(ps[i].rk);
    }
    return errors ? 1 : 0;
}
