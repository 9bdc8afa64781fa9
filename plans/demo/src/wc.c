#include <ctype.h>
#include "wc.h"

struct wc_counts wc_count(FILE *in) {
    struct wc_counts c = {0, 0, 0};
    int ch, in_word = 0;
    while ((ch = fgetc(in)) != EOF) {
        c.bytes++;
        if (ch == '\n')
            c.lines++;
        if (isspace(ch)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            c.words++;
        }
    }
    return c;
}
