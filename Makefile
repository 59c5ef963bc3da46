# The two commands of the README: `make run` and `make test`. Everything else is a helper.
BUILD      ?= build
TEST_BUILD ?= build-test
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECS  ?= 30

.PHONY: all deps build run test test-release unit integration fuzz bench format clean

all: build

deps:
	@scripts/install-deps.sh build

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLR_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# Runs HAProxy + the agent on the built-in defaults (or LUNAROUTE_CONFIG), in ./run.
run: build
	$(BUILD)/bin/lunaroute-control up

# -Werror + ASan/UBSan build, then every unit and integration test.
test:
	@scripts/install-deps.sh test
	cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLR_WERROR=ON -DLR_SANITIZE=ON >/dev/null
	cmake --build $(TEST_BUILD) -j $(JOBS)
	cd $(TEST_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS)

# The same suite against the optimised (-O2, no sanitizers) build: what users run.
test-release: build
	@scripts/install-deps.sh test
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

unit integration: test-build-only
	cd $(TEST_BUILD) && ctest --output-on-failure -L $@

.PHONY: test-build-only
test-build-only:
	cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DLR_WERROR=ON -DLR_SANITIZE=ON >/dev/null
	cmake --build $(TEST_BUILD) -j $(JOBS)

# libFuzzer targets (clang), each run for FUZZ_SECS seconds on its seed corpus.
fuzz:
	@scripts/install-deps.sh test
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DBUILD_FUZZERS=ON -DBUILD_TESTING=OFF \
	  -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	scripts/run-fuzzers.sh $(FUZZ_BUILD)/fuzz $(FUZZ_SECS)

bench: build
	@scripts/install-deps.sh bench
	tests/bench/run.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(TEST_BUILD) $(FUZZ_BUILD)
