"""Static files of the demo EHR page (HTML, JS, CSS) and its synthetic patients."""
