/* partition: which partition of the command stream an organisation's
 * writes go to.
 *
 * The key is the 64-bit FNV-1a hash of the organisation id's text in lower
 * case, so "ABC..." and "abc..." land together; the partition is Lamping and
 * Veach's jump consistent hash of that key ("A Fast, Minimal Memory,
 * Consistent Hash Algorithm", 2014).  Jump hash moves only about 1/(N+1) of
 * the keys when N partitions become N+1, and only into the new partition.
 *
 * These values are part of the on-the-wire contract between API servers and
 * workers (the subject names a command is published on): never change the
 * hash, its constants or the case folding without migrating the stream. */
#ifndef BROKER_PARTITION_H
#define BROKER_PARTITION_H

#include <stddef.h>
#include <stdint.h>

/* 64-bit FNV-1a of len bytes of s, ASCII letters folded to lower case. */
uint64_t partition_key(const char *s, size_t len);

/* Jump consistent hash: the bucket of key among buckets, in
 * [0, buckets).  buckets < 1 is taken as 1 (the answer is 0). */
int32_t partition_jump(uint64_t key, int32_t buckets);

/* The partition of an organisation (NUL-terminated id text) among
 * partitions, in [0, partitions); partitions 0 is taken as 1.  Partition
 * counts beyond INT32_MAX are clamped to it. */
uint32_t partition_of(const char *org_id, uint32_t partitions);

#endif
