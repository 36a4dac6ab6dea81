/* jinja — the subset of Jinja2 that Hugging Face chat templates use, rendered
 * the way transformers' apply_chat_template renders them (jinja2 sandbox with
 * trim_blocks=True, lstrip_blocks=True, loop controls; raise_exception,
 * namespace, strftime_now, dict; tojson as json.dumps(ensure_ascii=False)).
 *
 * Statements: if/elif/else, for (tuple unpacking, `if` filter, else,
 * loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem),
 * set (name, tuple, namespace attribute, block set), macro (with defaults and
 * keyword arguments), break/continue, generation (rendered as its body),
 * comments, whitespace control ({%- -%} {{- -}} {%+).
 * Expressions: literals (strings, ints, floats, true/false/none, lists, dicts,
 * tuples), and/or/not, comparisons, in / not in, is [not] TEST, + - * / // % **,
 * ~, conditional expressions, subscripts, slices (strings by character, as
 * Python), attribute access, calls, filters.
 * Filters: abs, capitalize, count, d/default, dictsort, first, float, indent,
 * int, items, join, last, length, list, lower, map, max, min, reject,
 * rejectattr, replace, reverse, round, safe, select, selectattr, sort, string,
 * sum, title, tojson, trim, unique, upper.
 * Tests: boolean, callable, defined, divisibleby, eq/equalto/==, even, false,
 * float, ge/gt/le/lt/ne/</>/<=/>=/!=, in, integer, iterable, lower, mapping,
 * none, number, odd, sameas, sequence, string, true, undefined, upper.
 * Methods: str.strip/lstrip/rstrip/split/rsplit/startswith/endswith/upper/lower/
 * replace/title/capitalize/find/count/join/splitlines/format-free;
 * dict.items/keys/values/get.
 * Anything else is an error naming the construct and the template line.
 * Undefined names render as "" (jinja2's default Undefined). */
#ifndef CLV_JINJA_H
#define CLV_JINJA_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "cleave.h"

/* Render `tmpl` (len bytes) with the variables of the JSON object `vars`
 * (messages, add_generation_prompt, bos_token, ...). *out is malloc'd. */
int clv_jinja_render(const char *tmpl, size_t len, const cJSON *vars, char **out, size_t *out_len, clv_status *st);

#endif
