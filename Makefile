# `make` builds the release binary and places it at ./darknet, as the
# workshop expects. CARGO can be overridden, e.g. make CARGO=~/.cargo/bin/cargo.
CARGO ?= cargo

.PHONY: all darknet test clean

all: darknet

darknet:
	$(CARGO) build --release
	cp target/release/darknet ./darknet

test:
	$(CARGO) test --release

clean:
	$(CARGO) clean
	rm -f ./darknet
