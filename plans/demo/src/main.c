#include <stdio.h>
#include "wc.h"

int main(void) {
    struct wc_counts c = wc_count(stdin);
    printf("%zu %zu %zu\n", c.lines, c.words, c.bytes);
    return 0;
}
