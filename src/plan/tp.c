#include "tp.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "../util/util.h"

static const char *k_names[CLV_TP_COUNT] = {
    "replicate", "colwise", "rowwise", "colwise_gather_output", "rowwise_split_input",
    "packed_colwise", "packed_rowwise", "embedding_rowwise"};

const char *clv_tp_strategy_name(clv_tp_strategy s) { return s < CLV_TP_COUNT ? k_names[s] : "?"; }

bool clv_tp_strategy_parse(const char *s, clv_tp_strategy *out) {
    for (int i = 0; i < CLV_TP_COUNT; i++)
        if (strcmp(s, k_names[i]) == 0) {
            *out = (clv_tp_strategy)i;
            return true;
        }
    /* older spellings Transformers still reads */
    static const struct { const char *old; clv_tp_strategy now; } aliases[] = {
        {"colwise_rep", CLV_TP_COLWISE_GATHER_OUTPUT}, /* colwise, output replicated */
        {"rowwise_rep", CLV_TP_ROWWISE_SPLIT_INPUT},   /* rowwise, input replicated */
        {"local_colwise", CLV_TP_COLWISE},             /* local tensors: same math */
        {"local_rowwise", CLV_TP_ROWWISE},
        {"local", CLV_TP_REPLICATE},
        {"gather", CLV_TP_COLWISE_GATHER_OUTPUT},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(s, aliases[i].old) == 0) {
            *out = aliases[i].now;
            return true;
        }
    return false;
}

/* Per-layer module roles a plan may name. */
enum { M_Q, M_K, M_V, M_O, M_GATE, M_UP, M_DOWN, M_IN_NORM, M_POST_NORM, M_Q_NORM, M_K_NORM, M_QKV, M_GATE_UP,
       M_LAYER_COUNT };
static const char *k_layer_mod[M_LAYER_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
    "mlp.down_proj", "input_layernorm", "post_attention_layernorm", "self_attn.q_norm", "self_attn.k_norm",
    "self_attn.qkv_proj", "mlp.gate_up_proj"};

/* Does this architecture have module role k? */
static bool has_role(const clv_config *c, int k) {
    if (k == M_Q_NORM || k == M_K_NORM) return c->qk_norm;
    if (k == M_QKV || k == M_GATE_UP) return c->fused;
    if (k == M_Q || k == M_K || k == M_V || k == M_GATE || k == M_UP) return !c->fused;
    return true;
}

/* Does `pat` match `name`, where '*' matches one run of digits (a layer index)? */
static bool pattern_match(const char *pat, const char *name) {
    while (*pat && *name) {
        if (*pat == '*') {
            if (*name < '0' || *name > '9') return false;
            while (*name >= '0' && *name <= '9') name++;
            pat++;
            continue;
        }
        if (*pat++ != *name++) return false;
    }
    return *pat == 0 && *name == 0;
}

/* Transformers writes patterns relative to the base model ("layers.*...") or
 * the whole model ("model.layers.*..."): accept both. */
static bool match_module(const char *pat, const char *full) {
    if (pattern_match(pat, full)) return true;
    return strncmp(full, "model.", 6) == 0 && pattern_match(pat, full + 6);
}

int clv_tp_plan_make(clv_tp_plan *p, const clv_config *c, int n, int rank, const char *json, const char *src,
                     clv_status *st) {
    memset(p, 0, sizeof *p);
    p->size = n;
    p->rank = rank;
    if (n < 1) return clv_fail(st, CLV_EINVAL, "--tp %d: must be >= 1", n);
    const int L = c->n_layers;
    /* strategy per (layer, module), and for embed / head / final norm */
    clv_tp_strategy s[CLV_MAX_LAYERS][M_LAYER_COUNT], embed = CLV_TP_REPLICATE, head = CLV_TP_COLWISE_GATHER_OUTPUT,
                                                        norm = CLV_TP_REPLICATE;
    for (int l = 0; l < L; l++) {
        static const clv_tp_strategy autos[M_LAYER_COUNT] = {
            CLV_TP_COLWISE, CLV_TP_COLWISE, CLV_TP_COLWISE, CLV_TP_ROWWISE, CLV_TP_COLWISE, CLV_TP_COLWISE,
            CLV_TP_ROWWISE, CLV_TP_REPLICATE, CLV_TP_REPLICATE, CLV_TP_REPLICATE, CLV_TP_REPLICATE,
            CLV_TP_PACKED_COLWISE, CLV_TP_PACKED_COLWISE};
        memcpy(s[l], autos, sizeof autos);
    }
    if (json) {
        /* a manual plan: modules it does not name are replicated, as in Transformers */
        for (int l = 0; l < L; l++)
            for (int k = 0; k < M_LAYER_COUNT; k++) s[l][k] = CLV_TP_REPLICATE;
        head = CLV_TP_REPLICATE;
        cJSON *root = cJSON_ParseWithOpts(json, NULL, true); /* nothing after the object */
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return clv_fail(st, CLV_EINVAL, "%s: not a JSON object of module pattern -> strategy", src);
        }
        const cJSON *e;
        int rc = 0;
        cJSON_ArrayForEach(e, root) {
            clv_tp_strategy strat;
            if (!cJSON_IsString(e) || !clv_tp_strategy_parse(e->valuestring, &strat)) {
                rc = clv_fail(st, CLV_EINVAL,
                              "%s: \"%s\": unknown strategy %s%s%s (colwise, rowwise, colwise_gather_output, "
                              "rowwise_split_input, packed_colwise, packed_rowwise, embedding_rowwise, replicate)",
                              src, e->string, cJSON_IsString(e) ? "'" : "", cJSON_IsString(e) ? e->valuestring : "(not a string)",
                              cJSON_IsString(e) ? "'" : "");
                break;
            }
            int hits = 0;
            char full[128];
            for (int l = 0; l < L; l++)
                for (int k = 0; k < M_LAYER_COUNT; k++) {
                    if (!has_role(c, k)) continue;
                    snprintf(full, sizeof full, "model.layers.%d.%s", l, k_layer_mod[k]);
                    if (match_module(e->string, full)) s[l][k] = strat, hits++;
                }
            if (match_module(e->string, "model.embed_tokens")) embed = strat, hits++;
            if (match_module(e->string, "model.norm")) norm = strat, hits++;
            if (match_module(e->string, "lm_head")) head = strat, hits++;
            if (!hits) {
                rc = clv_fail(st, CLV_EINVAL, "%s: pattern \"%s\" matches no module of this %s", src, e->string,
                              clv_arch_name(c->arch));
                break;
            }
        }
        cJSON_Delete(root);
        if (rc) return rc;
    }
    /* what fits which tensor */
    char who[96];
#define BAD_FIT(mod, strat, why)                                                                                   \
    clv_fail(st, CLV_EINVAL, "tp plan: %s cannot be %s with --tp %d: %s", mod, clv_tp_strategy_name(strat), n, why)
    if (norm != CLV_TP_REPLICATE) return BAD_FIT("model.norm", norm, "a 1-D norm weight can only be replicated");
    if (embed != CLV_TP_REPLICATE && embed != CLV_TP_EMBEDDING_ROWWISE)
        return BAD_FIT("model.embed_tokens", embed, "an embedding is embedding_rowwise or replicate");
    if (head == CLV_TP_COLWISE || head == CLV_TP_PACKED_COLWISE) head = CLV_TP_COLWISE_GATHER_OUTPUT; /* logits must be whole */
    if (head != CLV_TP_REPLICATE && head != CLV_TP_COLWISE_GATHER_OUTPUT)
        return BAD_FIT("lm_head", head, "the head is colwise (vocab-split, logits gathered) or replicate");
    for (int l = 0; l < L; l++) {
        /* fused tensors: packed_colwise splits each part (q, k, v / gate, up) by itself */
        for (int k = M_QKV; k <= M_GATE_UP && c->fused; k++) {
            snprintf(who, sizeof who, "model.layers.%d.%s", l, k_layer_mod[k]);
            if (s[l][k] == CLV_TP_COLWISE || s[l][k] == CLV_TP_COLWISE_GATHER_OUTPUT)
                return BAD_FIT(who, s[l][k], "it is a packed tensor: a plain split would cut across its parts (use packed_colwise)");
            if (s[l][k] != CLV_TP_PACKED_COLWISE && s[l][k] != CLV_TP_REPLICATE)
                return BAD_FIT(who, s[l][k], "its packed parts are outputs: packed_colwise or replicate");
            clv_tp_strategy part = s[l][k] == CLV_TP_PACKED_COLWISE ? CLV_TP_COLWISE : CLV_TP_REPLICATE;
            if (k == M_QKV) s[l][M_Q] = s[l][M_K] = s[l][M_V] = part;
            else s[l][M_GATE] = s[l][M_UP] = part;
        }
        for (int k = M_IN_NORM; k <= M_K_NORM; k++)
            if (s[l][k] != CLV_TP_REPLICATE) {
                snprintf(who, sizeof who, "model.layers.%d.%s", l, k_layer_mod[k]);
                return BAD_FIT(who, s[l][k], "a 1-D norm weight can only be replicated");
            }
        for (int k = M_Q; k <= M_DOWN; k++) {
            snprintf(who, sizeof who, "model.layers.%d.%s", l, k_layer_mod[k]);
            if (s[l][k] == CLV_TP_EMBEDDING_ROWWISE) return BAD_FIT(who, s[l][k], "it is not an embedding");
            if (s[l][k] == CLV_TP_PACKED_COLWISE || s[l][k] == CLV_TP_PACKED_ROWWISE)
                return BAD_FIT(who, s[l][k], "it is not a fused (packed) tensor");
            if (s[l][k] == CLV_TP_COLWISE_GATHER_OUTPUT) s[l][k] = CLV_TP_COLWISE; /* gathered where it is consumed */
            if (s[l][k] == CLV_TP_ROWWISE_SPLIT_INPUT) s[l][k] = CLV_TP_ROWWISE;
        }
        /* Each block is either split (inputs colwise, output rowwise) or replicated. */
        bool qkv_col = s[l][M_Q] == CLV_TP_COLWISE;
        if (s[l][M_K] != s[l][M_Q] || s[l][M_V] != s[l][M_Q] || (s[l][M_O] == CLV_TP_ROWWISE) != qkv_col ||
            (s[l][M_O] != CLV_TP_ROWWISE && s[l][M_O] != CLV_TP_REPLICATE) || (!qkv_col && s[l][M_Q] != CLV_TP_REPLICATE))
            return clv_fail(st, CLV_EINVAL,
                            "tp plan: model.layers.%d.self_attn: q/k/v_proj %s/%s/%s with o_proj %s is not supported "
                            "(q, k, v colwise with o rowwise, or all replicate)",
                            l, clv_tp_strategy_name(s[l][M_Q]), clv_tp_strategy_name(s[l][M_K]),
                            clv_tp_strategy_name(s[l][M_V]), clv_tp_strategy_name(s[l][M_O]));
        bool gu_col = s[l][M_GATE] == CLV_TP_COLWISE;
        if (s[l][M_UP] != s[l][M_GATE] || (s[l][M_DOWN] == CLV_TP_ROWWISE) != gu_col ||
            (s[l][M_DOWN] != CLV_TP_ROWWISE && s[l][M_DOWN] != CLV_TP_REPLICATE) ||
            (!gu_col && s[l][M_GATE] != CLV_TP_REPLICATE))
            return clv_fail(st, CLV_EINVAL,
                            "tp plan: model.layers.%d.mlp: gate/up_proj %s/%s with down_proj %s is not supported "
                            "(gate, up colwise with down rowwise, or all replicate)",
                            l, clv_tp_strategy_name(s[l][M_GATE]), clv_tp_strategy_name(s[l][M_UP]),
                            clv_tp_strategy_name(s[l][M_DOWN]));
        p->attn_sharded[l] = qkv_col && n > 1;
        p->mlp_sharded[l] = gu_col && n > 1;
    }
    p->head_sharded = head == CLV_TP_COLWISE_GATHER_OUTPUT && n > 1;
    p->embed_sharded = embed == CLV_TP_EMBEDDING_ROWWISE && n > 1;

    /* sizes: checked for every split that is used */
    bool any_attn = false, any_mlp = false;
    for (int l = 0; l < L; l++) any_attn |= p->attn_sharded[l], any_mlp |= p->mlp_sharded[l];
    p->heads = c->n_heads, p->kv_heads = c->n_kv_heads, p->inter = c->intermediate, p->vocab = c->vocab;
    if (any_attn) {
        if (n > c->n_heads)
            return clv_fail(st, CLV_EINVAL, "tp plan: self_attn.q_proj: --tp %d is larger than num_attention_heads %d", n,
                            c->n_heads);
        if (c->n_heads % n)
            return clv_fail(st, CLV_EINVAL, "tp plan: self_attn.q_proj: num_attention_heads %d is not divisible by --tp %d",
                            c->n_heads, n);
        p->heads = c->n_heads / n;
        p->head0 = rank * p->heads;
        int group = c->n_heads / c->n_kv_heads;
        if (n <= c->n_kv_heads) {
            if (c->n_kv_heads % n)
                return clv_fail(st, CLV_EINVAL, "tp plan: self_attn.k_proj: num_key_value_heads %d is not divisible by --tp %d",
                                c->n_kv_heads, n);
            p->kv_heads = c->n_kv_heads / n;
            p->kv_head0 = rank * p->kv_heads;
        } else {
            /* more ranks than KV heads: each rank holds the one KV head its query heads use */
            if (n % c->n_kv_heads)
                return clv_fail(st, CLV_EINVAL,
                                "tp plan: self_attn.k_proj: --tp %d exceeds num_key_value_heads %d and is not a multiple of it, "
                                "so a rank's query heads would need parts of two KV heads",
                                n, c->n_kv_heads);
            p->kv_replicated = true;
            p->kv_heads = 1;
            p->kv_head0 = p->head0 / group;
        }
    }
    if (any_mlp) {
        if (c->intermediate % n)
            return clv_fail(st, CLV_EINVAL, "tp plan: mlp.gate_proj: intermediate_size %d is not divisible by --tp %d",
                            c->intermediate, n);
        p->inter = c->intermediate / n;
        p->inter0 = rank * p->inter;
    }
    if (p->head_sharded || p->embed_sharded) {
        if (c->vocab % n)
            return clv_fail(st, CLV_EINVAL, "tp plan: %s: vocab_size %d is not divisible by --tp %d",
                            p->head_sharded ? "lm_head" : "model.embed_tokens", c->vocab, n);
        p->vocab = c->vocab / n;
        p->vocab0 = rank * p->vocab;
    }
    return 0;
#undef BAD_FIT
}

void clv_tp_plan_print(const clv_tp_plan *p, const clv_config *c, FILE *f) {
    int sa = 0, sm = 0;
    for (int l = 0; l < c->n_layers; l++) sa += p->attn_sharded[l], sm += p->mlp_sharded[l];
    fprintf(f, "tensor parallel: %d ranks\n", p->size);
    fprintf(f, "  attention: %d of %d layers split (q/k/v colwise, o rowwise): %d q heads, %d kv heads per rank%s\n", sa,
            c->n_layers, p->heads, p->kv_heads, p->kv_replicated ? " (KV heads replicated: more ranks than KV heads)" : "");
    fprintf(f, "  mlp:       %d of %d layers split (gate/up colwise, down rowwise): intermediate %d per rank\n", sm,
            c->n_layers, p->inter);
    fprintf(f, "  embedding: %s; lm_head: %s\n", p->embed_sharded ? "embedding_rowwise" : "replicate",
            p->head_sharded ? "colwise, logits all-gathered" : "replicate");
}
