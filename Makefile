# Convenience aliases; the scripts install everything they need by themselves.
.PHONY: demo test sanity lint build docs clean
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
sanity:
	bash -c 'source scripts/lib.sh && setup_all && bash tests/sanity/run.sh'
lint:
	bash -c 'source scripts/lib.sh && setup_all && ansible-lint --profile production'
docs:
	bash scripts/docs.sh
build:
	bash -c 'source scripts/lib.sh && setup_all && ansible-galaxy collection build --force --output-path build/dist .'
clean:
	rm -rf build .pytest_cache
