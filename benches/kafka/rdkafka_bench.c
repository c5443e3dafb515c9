/*
 * A librdkafka producer or consumer for benches/kafka/clients.py: the client side of a Kafka
 * benchmark with next to no cost of its own, so that the broker is what is measured.
 *
 *   rdkafka_bench produce BOOTSTRAP TOPIC COUNT SIZE ACKS   COUNT messages of SIZE bytes
 *   rdkafka_bench consume BOOTSTRAP TOPIC COUNT             COUNT messages, one group member
 *
 * Prints "started" on standard output when the timed part starts (produce: before the first
 * message; consume: once the first message arrived, so joining the group is not timed), then
 * one line "messages SECONDS" with the messages timed and the seconds they took. Exits 1 on
 * any delivery or consume error.
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void set(rd_kafka_conf_t *conf, const char *key, const char *value) {
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s=%s: %s\n", key, value, err);
        exit(2);
    }
}

static long failed = 0;

static void delivered(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (failed++ < 3) fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
    }
}

static int produce(const char *bootstrap, const char *topic, long count, size_t size,
                   const char *acks) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", bootstrap);
    set(conf, "acks", acks);
    set(conf, "linger.ms", "5");
    set(conf, "batch.size", "1048576");
    set(conf, "queue.buffering.max.messages", "1000000");
    rd_kafka_conf_set_dr_msg_cb(conf, delivered);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "producer: %s\n", err);
        return 2;
    }
    char *value = malloc(size);
    memset(value, 'x', size);
    printf("started\n");
    fflush(stdout);
    double start = now();
    char key[16];
    for (long i = 0; i < count; i++) {
        int key_len = snprintf(key, sizeof(key), "%ld", i % 64);
        for (;;) {
            rd_kafka_resp_err_t e = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(value, size),
                RD_KAFKA_V_KEY(key, (size_t)key_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
                return 1;
            }
            rd_kafka_poll(rk, 10);
        }
        if (i % 10000 == 0) rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 300 * 1000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "%d messages not delivered\n", rd_kafka_outq_len(rk));
        return 1;
    }
    double elapsed = now() - start;
    printf("%ld %.6f\n", count, elapsed);
    rd_kafka_destroy(rk);
    free(value);
    return failed ? 1 : 0;
}

static int consume(const char *bootstrap, const char *topic, long count) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", bootstrap);
    set(conf, "group.id", "bench-rdkafka");
    set(conf, "auto.offset.reset", "earliest");
    set(conf, "enable.auto.commit", "false");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "consumer: %s\n", err);
        return 2;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        fprintf(stderr, "subscribe: %s\n", rd_kafka_err2str(e));
        return 2;
    }
    long seen = 0;
    double start = 0, deadline = now() + 300;
    while (seen < count && now() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (!m) continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                return 1;
            }
        } else if (++seen == 1) {
            printf("started\n");
            fflush(stdout);
            start = now();
        }
        rd_kafka_message_destroy(m);
    }
    double elapsed = now() - start;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (seen < count) {
        fprintf(stderr, "consumed %ld of %ld\n", seen, count);
        return 1;
    }
    printf("%ld %.6f\n", count - 1, elapsed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 7 && strcmp(argv[1], "produce") == 0)
        return produce(argv[2], argv[3], atol(argv[4]), (size_t)atol(argv[5]), argv[6]);
    if (argc == 5 && strcmp(argv[1], "consume") == 0)
        return consume(argv[2], argv[3], atol(argv[4]));
    fprintf(stderr,
            "usage: rdkafka_bench produce BOOTSTRAP TOPIC COUNT SIZE ACKS\n"
            "       rdkafka_bench consume BOOTSTRAP TOPIC COUNT\n");
    return 2;
}
