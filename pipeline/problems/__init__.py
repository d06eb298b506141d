"""Problems and judging: importers and named sets (data, sets), the embedded demo set,
final-answer extraction and judging (answers), numeric variants, the novelty and
contamination filter. Imports core and storage."""
