# paymentd build.  `make` builds build/paymentd; `make test` builds the
# sanitizer variant and runs every test (scripts/test.sh).

CC      ?= cc
CSTD    := -std=c17 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
INC     := -Isrc
LIBS    := -lmicrohttpd -ljansson -lsqlite3 -lpthread
# SHA-256 of API key secrets (OpenSSL's libcrypto); libm for the rate limiter.
LIBS    += -lcrypto -lm
# The broker (asynchronous writes): NATS JetStream's C client.
LIBS    += -lnats
# Webhook deliveries: libcurl (its multi interface), OpenSSL flavour.
LIBS    += -lcurl
# MongoDB store: libmongoc, found by pkg-config.  Its headers are system
# headers (-isystem) so that -Werror judges only the project's code.
MONGO_PC := libmongoc-1.0
INC     += $(patsubst -I%,-isystem %,$(shell pkg-config --cflags $(MONGO_PC)))
LIBS    += $(shell pkg-config --libs $(MONGO_PC))
# PostgreSQL store: libpq, found by pkg-config.
PQ_PC   := libpq
INC     += $(patsubst -I%,-isystem %,$(shell pkg-config --cflags $(PQ_PC)))
LIBS    += $(shell pkg-config --libs $(PQ_PC))
# Readiness and watchdog notifications to systemd (sd_notify).
LIBS    += -lsystemd
# Generated headers (build/gen/version.h).
INC     += -Ibuild

SRC      := $(sort $(shell find src -name '*.c' ! -name main.c))
TEST_SRC := $(sort $(shell find tests -name 'test_*.c'))

# The operator console: every file under console/ is embedded into the
# binary (src/app/console.h) through one generated C file, made again when
# a file is changed, added or removed (console_files.list changes then).
CONSOLE_FILES := $(sort $(shell find console -type f ! -name '.*' 2>/dev/null))
CONSOLE_GEN   := build/gen/console_assets.c

OBJ      := $(SRC:%.c=build/obj/%.o) build/obj/gen/console_assets.o
ASAN_OBJ := $(SRC:%.c=build/asan/obj/%.o) build/asan/obj/gen/console_assets.o
TESTS    := $(TEST_SRC:%.c=build/asan/%)

.PHONY: all test test-unit tests clean schema check-schema fuzz install uninstall FORCE
all: build/paymentd

# V=1 shows the full commands.
Q := $(if $(V),,@)

build/paymentd: build/obj/src/main.o $(OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

build/asan/paymentd: build/asan/obj/src/main.o $(ASAN_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(SANFLAGS) -o $@ $^ $(LIBS)

build/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CSTD) $(WARN) $(CFLAGS) $(INC) -MMD -MP -c -o $@ $<

build/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC asan $<"
	$(Q)$(CC) $(CSTD) $(WARN) $(SANFLAGS) $(INC) -Itests -MMD -MP -c -o $@ $<

FORCE:

# The release (VERSION) and the commit built from, for src/app/version.c:
# the header is written again only when either changes, so a new commit
# rebuilds one file.  `make PAYMENTD_COMMIT=...` names the commit of a tree
# built outside git.
PAYMENTD_COMMIT ?= $(shell test -e .git && git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
VERSION_GEN := build/gen/version.h
VERSION_TEXT = '\043define PAYMENTD_VERSION "%s"\n\043define PAYMENTD_COMMIT "%s"\n' "$$(cat VERSION)" "$(PAYMENTD_COMMIT)"

$(VERSION_GEN): FORCE
	@mkdir -p $(dir $@)
	@printf $(VERSION_TEXT) | cmp -s - $@ || printf $(VERSION_TEXT) > $@

build/obj/src/app/version.o build/asan/obj/src/app/version.o: $(VERSION_GEN)

build/gen/console_files.list: FORCE
	@mkdir -p $(dir $@)
	@printf '%s\n' $(CONSOLE_FILES) | cmp -s - $@ || printf '%s\n' $(CONSOLE_FILES) > $@

$(CONSOLE_GEN): scripts/embed_assets.py build/gen/console_files.list $(CONSOLE_FILES)
	@echo "  EMBED   console/"
	$(Q)/usr/bin/python3 scripts/embed_assets.py console $@

build/obj/gen/console_assets.o: $(CONSOLE_GEN)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CSTD) $(WARN) $(CFLAGS) $(INC) -MMD -MP -c -o $@ $<

build/asan/obj/gen/console_assets.o: $(CONSOLE_GEN)
	@mkdir -p $(dir $@)
	@echo "  CC asan $<"
	$(Q)$(CC) $(CSTD) $(WARN) $(SANFLAGS) $(INC) -MMD -MP -c -o $@ $<

build/asan/tests/%: build/asan/obj/tests/%.o $(ASAN_OBJ)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(SANFLAGS) -o $@ $^ $(LIBS)

tests: $(TESTS) build/asan/paymentd build/paymentd

# Unit tests only (sanitizer build).
test-unit: $(TESTS)
	@scripts/test.sh --unit-only

# Every test: unit tests under ASan/UBSan, then the API tests against both
# the sanitizer build and the optimised build of the server.
test: tests
	@scripts/test.sh

# The attribute rules are generated from the seed spec; check-schema fails
# when the committed table is stale.
schema:
	@mkdir -p build
	/usr/bin/python3 tools/gen_schema.py spec/seed-swagger.yml > build/schema_gen.c.tmp
	mv build/schema_gen.c.tmp src/payment/schema_gen.c

check-schema:
	/usr/bin/python3 tools/gen_schema.py spec/seed-swagger.yml | cmp -s - src/payment/schema_gen.c

# libFuzzer harnesses (clang): `make fuzz` fuzzes each for FUZZ_SECONDS;
# the test run replays their corpus (fuzz/README.md).
fuzz:
	$(MAKE) -C fuzz run

# `make install` puts the optimised server and its manual page under PREFIX
# (staged under DESTDIR when set, as a package build does); `make uninstall`
# takes them away again.
PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR := $(DESTDIR)$(PREFIX)/sbin
MAN8DIR := $(DESTDIR)$(PREFIX)/share/man/man8

install: build/paymentd doc/paymentd.8
	install -D -m 0755 build/paymentd $(SBINDIR)/paymentd
	install -D -m 0644 doc/paymentd.8 $(MAN8DIR)/paymentd.8

uninstall:
	rm -f $(SBINDIR)/paymentd $(MAN8DIR)/paymentd.8

clean:
	rm -rf build

-include $(OBJ:.o=.d) $(ASAN_OBJ:.o=.d) build/obj/src/main.d build/asan/obj/src/main.d \
         $(TEST_SRC:%.c=build/asan/obj/%.d)
.SECONDARY:
