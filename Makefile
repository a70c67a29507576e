# One command per job; each sets up its own virtual environment first.
#   make test                  execute the chapters that changed, build the book, then run the
#                              unit/property tests and the browser check of every page
#   make book                  the same execution and build, without the tests
#   make chapter NAME=contests rerun one chapter, store its .ipynb and ledger, write its figures
#   make experiment NAME=mine  run experiments/mine.md, store its .ipynb, write its figures
#                              under figures/experiments/mine/
#   make clean-cache           forget every cached sweep result (.crowdlib-cache)
#   (figures alone, without Jupyter: .venv/bin/python -m crowdlib figures --out DIR)
#
# How execution works: `python -m crowdlib execute` runs each chapter's MyST source once per
# hash of (the chapter, crowdlib's source, requirements.txt, the chapter's stored ledger) and
# keeps the executed notebook in _build/executed/. A chapter whose hash is unchanged is not run
# again, so `make book` after `make test` executes nothing. Every execution verifies the stored
# ledger and that its outputs equal the stored chapters/*.ipynb, which the book then renders
# (execution is off in _config.yml): the book shows outputs verified against the current code.
# `make force` re-executes every chapter from an empty result cache.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
CHAPTERS = $(shell sed -n 's/.*file: chapters\///p' _toc.yml)
JOBS   ?= 2
# one cache of expensive results for the book, the tests and single-chapter runs
export CROWDLIB_CACHE := $(CURDIR)/.crowdlib-cache

.PHONY: book test chapter experiment force sync venv clean clean-cache check-venv

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# a .venv copied from another checkout would silently run that checkout's crowdlib
check-venv: $(STAMP)
	@$(BIN)/python -P -c "import crowdlib, pathlib, sys; \
	  here = pathlib.Path('$(CURDIR)/crowdlib').resolve(); there = pathlib.Path(crowdlib.__file__).resolve().parent; \
	  sys.exit(0 if here == there else f'$(VENV) runs crowdlib from {there}, not {here}: remove $(VENV) and rerun make')"

book: check-venv
	$(BIN)/python -m crowdlib execute --jobs $(JOBS)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "Book written to _build/html/index.html"

test: book
	$(BIN)/python -m pytest tests -q -rs -n $(JOBS)

# a full re-execution: the cached sweep results go too
force: check-venv
	rm -rf .crowdlib-cache
	$(BIN)/python -m crowdlib execute --jobs $(JOBS) --force

# Execute one chapter, store its notebook (outputs and figures included) and its ledger, and
# save every figure it draws under figures/$(NAME)/. The chapter name is checked.
chapter: check-venv
	$(if $(NAME),,$(error make chapter needs NAME=<chapter>; the chapters are: $(CHAPTERS)))
	CROWDLIB_FIGURES=$(CURDIR)/figures/$(NAME) $(BIN)/python -m crowdlib execute --chapter $(NAME) \
	    --store --force --jobs 1
	@echo "Figures written to figures/$(NAME)/"

# Execute one experiment (experiments/$(NAME).md), store its .ipynb pair with outputs and figures,
# and save its figures under figures/experiments/$(NAME)/. `make test` runs every experiment too.
EXPERIMENTS = $(basename $(notdir $(wildcard experiments/*.md)))
experiment: check-venv
	$(if $(NAME),,$(error make experiment needs NAME=<file stem in experiments/>; they are: $(EXPERIMENTS)))
	CROWDLIB_FIGURES=$(CURDIR)/figures/experiments/$(NAME) $(BIN)/python -m crowdlib execute \
	    --experiment $(NAME) --store --force --jobs 1
	@echo "Figures written to figures/experiments/$(NAME)/"

clean-cache:
	rm -rf .crowdlib-cache

# Re-pair after editing a chapter's .md or .ipynb by hand (jupytext keeps the newer side).
sync: $(STAMP)
	$(BIN)/jupytext --sync chapters/*.md $(wildcard experiments/*.md)

clean:
	rm -rf _build .crowdlib-cache figures
