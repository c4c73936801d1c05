"""Model evaluation on held-out rows: challenger against champion, bias by facet, and the promotion gate."""
