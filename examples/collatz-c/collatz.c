/*
 * collatz: total stopping-time statistics of the Collatz map over a range.
 *
 * The Collatz map sends n to n/2 when n is even and to 3n+1 when n is odd.
 * The total stopping time of n is the number of steps until the orbit
 * first reaches 1 (0 for n = 1); e.g. 6 -> 3 -> 10 -> 5 -> 16 -> 8 -> 4 ->
 * 2 -> 1 takes 8 steps. That every n >= 1 gets there is the Collatz
 * conjecture, checked by computer far beyond any range given here.
 *
 * One work unit, on stdin: two decimal integers "START COUNT" separated by
 * whitespace (a trailing newline is fine), meaning n = START ..
 * START + COUNT - 1. Output, one line of JSON on stdout:
 *
 *   {"start":1,"count":1000,"max_steps":178,"max_at":871,
 *    "sum_steps":59542,"mean_steps":59.542000,
 *    "histogram":{"bucket_width":100,"counts":[...11 numbers...]},
 *    "wide":0}
 *
 *   max_steps   the longest total stopping time in the range
 *   max_at      the smallest n in the range that takes max_steps
 *   sum_steps   the sum of the stopping times (mean = sum_steps / count)
 *   mean_steps  that mean, rounded half up to 6 decimals
 *   histogram   counts[i] = how many n took i*100 .. i*100+99 steps, for
 *               i = 0..9; the last entry counts 1000 steps or more
 *   wide        how many n had an orbit that climbed past 2^64 - 1
 *               (the first is n = 12 327 829 503)
 *
 * Everything is integer arithmetic, so the output is the same bytes on
 * every host, natively and in any WebAssembly runtime. Orbits are followed
 * in uint64_t; when 3n+1 would not fit, the orbit continues in 128 bits
 * (four 32-bit limbs) until it fits again. An orbit beyond 2^128 (none is
 * known for any n < 2^64) is reported as an error rather than computed
 * wrongly.
 *
 * Bad input (anything but two decimal integers, START = 0, COUNT = 0 or
 * above MAX_COUNT, a range past 2^64 - 1, any command-line argument)
 * prints the reason to stderr and exits with status 1.
 */

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Largest COUNT accepted in one unit: keeps a unit's work bounded. */
#define MAX_COUNT UINT64_C(100000000)
/* Largest input accepted, in bytes (two 20-digit numbers fit easily). */
#define MAX_INPUT 256
/* Histogram: NUM_BUCKETS buckets of BUCKET_WIDTH steps, then one for more. */
#define BUCKET_WIDTH 100
#define NUM_BUCKETS 10
/* Largest odd x for which 3x + 1 still fits in a uint64_t. */
#define ODD_MAX ((UINT64_MAX - 1) / 3)

static void fail(const char *message)
{
    fprintf(stderr, "collatz: %s\n", message);
    exit(1);
}

/* ---- input ------------------------------------------------------------ */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/*
 * Parses one unsigned decimal number at *pos (after skipping whitespace)
 * into *out and advances *pos. Only the digits 0-9 are accepted: no sign,
 * no hex, no exponent. Fails on a missing number, a stray character or a
 * value above 2^64 - 1. `what` names the field in error messages.
 */
static void parse_u64(const char *buf, size_t len, size_t *pos, const char *what, uint64_t *out)
{
    char message[128];
    size_t i = *pos;
    while (i < len && is_space(buf[i]))
        i++;
    if (i == len) {
        snprintf(message, sizeof message, "bad input: missing %s (expected \"START COUNT\")", what);
        fail(message);
    }
    uint64_t value = 0;
    while (i < len && !is_space(buf[i])) {
        char c = buf[i];
        if (c < '0' || c > '9') {
            snprintf(message, sizeof message,
                     "bad input: %s must be a decimal integer, found character 0x%02x",
                     what, (unsigned)(unsigned char)c);
            fail(message);
        }
        unsigned d = (unsigned)(c - '0');
        /* value * 10 + d must not exceed UINT64_MAX. */
        if (value > (UINT64_MAX - d) / 10) {
            snprintf(message, sizeof message, "bad input: %s is larger than 2^64 - 1", what);
            fail(message);
        }
        value = value * 10 + d;
        i++;
    }
    /* At least one digit was read: the loop started on a non-space. */
    *pos = i;
    *out = value;
}

/* Reads all of stdin into buf (at most MAX_INPUT bytes); returns its length. */
static size_t read_input(char *buf)
{
    size_t len = 0;
    for (;;) {
        size_t n = fread(buf + len, 1, MAX_INPUT - len, stdin);
        len += n;
        if (n == 0)
            break;
        if (len == MAX_INPUT) {
            /* Full: there must be nothing more to read. */
            if (fgetc(stdin) != EOF)
                fail("bad input: longer than 256 bytes (expected \"START COUNT\")");
            break;
        }
    }
    if (ferror(stdin))
        fail("cannot read stdin");
    return len;
}

/* ---- the map -------------------------------------------------------------- */

/*
 * Follows an orbit that has outgrown 64 bits. x is odd and above ODD_MAX, so
 * its next value 3x + 1 does not fit in a uint64_t. Carries on in 128 bits,
 * kept as four 32-bit limbs (least significant first) in uint64_t
 * variables so that every product and carry fits, adding one to *steps per
 * step, until the value fits in 64 bits again; returns that value. `start`
 * is only for the error message.
 */
static uint64_t follow_wide(uint64_t x, uint64_t *steps, uint64_t start)
{
    uint64_t limb[4] = {x & 0xffffffffu, x >> 32, 0, 0};
    do {
        if (limb[0] & 1) {
            /* limb = 3 * limb + 1, with the carry rippling up. */
            uint64_t carry = 1;
            for (int i = 0; i < 4; i++) {
                uint64_t t = limb[i] * 3 + carry; /* < 2^34: no overflow */
                limb[i] = t & 0xffffffffu;
                carry = t >> 32;
            }
            if (carry != 0) {
                char message[128];
                snprintf(message, sizeof message,
                         "the orbit of %" PRIu64 " exceeds 2^128; not supported", start);
                fail(message);
            }
        } else {
            /* limb = limb / 2 */
            for (int i = 0; i < 3; i++)
                limb[i] = (limb[i] >> 1) | ((limb[i + 1] & 1) << 31);
            limb[3] >>= 1;
        }
        (*steps)++;
    } while (limb[2] != 0 || limb[3] != 0);
    return (limb[1] << 32) | limb[0];
}

/*
 * Total stopping time of n >= 1: steps until the orbit reaches 1. Sets
 * *wide when the orbit went past 2^64 - 1.
 */
static uint64_t stopping_time(uint64_t n, bool *wide, uint64_t start_for_errors)
{
    uint64_t x = n;
    uint64_t steps = 0;
    *wide = false;
    while (x != 1) {
        if ((x & 1) == 0) {
            x >>= 1;
            steps++;
        } else if (x <= ODD_MAX) {
            x = 3 * x + 1;
            steps++;
        } else {
            *wide = true;
            x = follow_wide(x, &steps, start_for_errors);
        }
    }
    return steps;
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        fail("takes no arguments; the work unit \"START COUNT\" comes on stdin");

    char buf[MAX_INPUT];
    size_t len = read_input(buf);
    size_t pos = 0;
    uint64_t start, count;
    parse_u64(buf, len, &pos, "START", &start);
    parse_u64(buf, len, &pos, "COUNT", &count);
    while (pos < len && is_space(buf[pos]))
        pos++;
    if (pos != len)
        fail("bad input: more than two numbers (expected \"START COUNT\")");
    if (start == 0)
        fail("bad input: START must be at least 1");
    if (count == 0)
        fail("bad input: COUNT must be at least 1");
    if (count > MAX_COUNT)
        fail("bad input: COUNT must be at most 100000000");
    if (start - 1 > UINT64_MAX - count) /* start + count - 1 > UINT64_MAX */
        fail("bad input: START + COUNT - 1 is larger than 2^64 - 1");

    uint64_t max_steps = 0, max_at = start, sum_steps = 0, wide_count = 0;
    uint64_t histogram[NUM_BUCKETS + 1] = {0};
    for (uint64_t k = 0; k < count; k++) {
        uint64_t n = start + k;
        bool wide;
        uint64_t steps = stopping_time(n, &wide, n);
        if (steps > max_steps) { /* strict: keeps the smallest such n */
            max_steps = steps;
            max_at = n;
        }
        /* At most MAX_COUNT terms of a few thousand steps each: no overflow. */
        sum_steps += steps;
        uint64_t bucket = steps / BUCKET_WIDTH;
        histogram[bucket < NUM_BUCKETS ? bucket : NUM_BUCKETS]++;
        if (wide)
            wide_count++;
    }

    /* mean = sum_steps / count to 6 decimals, rounded half up, in integers:
     * (sum_steps % count) * 10^6 < 10^8 * 10^6 fits easily. */
    uint64_t mean_int = sum_steps / count;
    uint64_t mean_frac = ((sum_steps % count) * 1000000 + count / 2) / count;
    if (mean_frac == 1000000) { /* rounded up to the next integer */
        mean_int++;
        mean_frac = 0;
    }

    printf("{\"start\":%" PRIu64 ",\"count\":%" PRIu64 ",\"max_steps\":%" PRIu64
           ",\"max_at\":%" PRIu64 ",\"sum_steps\":%" PRIu64 ",\"mean_steps\":%" PRIu64
           ".%06" PRIu64 ",\"histogram\":{\"bucket_width\":%d,\"counts\":[",
           start, count, max_steps, max_at, sum_steps, mean_int, mean_frac, BUCKET_WIDTH);
    for (int i = 0; i <= NUM_BUCKETS; i++)
        printf("%s%" PRIu64, i ? "," : "", histogram[i]);
    printf("]},\"wide\":%" PRIu64 "}\n", wide_count);

    if (fflush(stdout) != 0 || ferror(stdout))
        fail("cannot write stdout");
    return 0;
}
