#ifndef WC_H
#define WC_H
#include <stddef.h>
#include <stdio.h>

struct wc_counts {
    size_t lines;
    size_t words;
    size_t bytes;
};

/* Counts lines, words and bytes of everything readable from `in`. */
struct wc_counts wc_count(FILE *in);

#endif
