"""The HTML report of a run: tables and pages (:mod:`.html`), figures (:mod:`.plots`),
provenance (:mod:`.provenance`), and one function per report rule (:mod:`.pages`)."""
