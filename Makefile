# One command per job; each sets up its own virtual environment first.
#   make book                  build the HTML book (fails on any notebook error or warning)
#   make test                  unit/property tests of crowdlib + nbval on every chapter
#   make chapter NAME=contests rerun one chapter, refresh its .ipynb, write its figures
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
NAME   ?= contests
# one cache of expensive results for the book, the tests and single-chapter runs
export CROWDLIB_CACHE := $(CURDIR)/.crowdlib-cache

.PHONY: book test chapter sync venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "Book written to _build/html/index.html"

# nbval runs each chapter's current MyST source with the stored outputs of its .ipynb
# (copied to _build/nbval, so an edit to a .md is executed even before `make chapter`): a
# changed check stops its cell naming the ledger row, and a changed output fails the comparison.
test: $(STAMP)
	rm -rf _build/nbval && mkdir -p _build/nbval
	for md in chapters/*.md; do nb=_build/nbval/$$(basename $$md .md).ipynb; \
	    cp $${md%.md}.ipynb $$nb && $(BIN)/jupytext --quiet --to ipynb --update --output $$nb $$md \
	    || exit 1; done
	MPLBACKEND=Agg $(BIN)/python -m pytest tests _build/nbval/*.ipynb --nbval --nbval-current-env \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg -q

# Execute the MyST source, refresh the paired .ipynb (outputs included, for nbval)
# save every figure the chapter draws under figures/$(NAME)/, and store its ledger in
# ledger/$(NAME).json (everywhere else, executing a chapter verifies that file instead).
chapter: $(STAMP)
	CROWDLIB_LEDGER=write CROWDLIB_FIGURES=$(CURDIR)/figures/$(NAME) MPLBACKEND=Agg $(BIN)/jupytext --to ipynb \
	    --execute chapters/$(NAME).md
	@echo "Figures written to figures/$(NAME)/"

# Re-pair after editing a chapter's .md or .ipynb by hand (jupytext keeps the newer side).
sync: $(STAMP)
	$(BIN)/jupytext --sync chapters/*.md

clean:
	rm -rf _build .crowdlib-cache figures
