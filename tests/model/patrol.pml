/* patrol.pml: the rotation state machine and its crash recovery (doc/design.md,
 * src/rotate.c), checked with spin.  One integration, one non-staging store
 * (Vault); Onplana's tokens, the store and patrol's records are shared state.
 *
 * patrol runs again and again (a run = one `--rotate-now` attempt or a restart
 * after a crash).  Within a run every remote call may fail (error, refused,
 * answer lost after the operation was performed), every recorded step may be
 * the last thing patrol does (a crash, like PATROL_CRASH_AT), and a store write
 * in flight at a crash may land or not.  After MAXRUNS such runs, two runs
 * without faults must leave everything settled.
 *
 * Properties (tests/model/run-spin.sh checks each):
 *   store_live   [] the store never holds a revoked (or unknown) token
 *   one_extra    [] at most one token alive besides the store's
 *   settled      [] (done -> every token patrol created is in the store or
 *                revoked, the records agree with the store, nothing pending)
 *   plus assert()s in the code paths and no invalid end states (safety run).
 *
 * Three places where src/rotate.c once differed from this design were found
 * by this model and fixed in the code (kept here as history):
 *   CODE_UNREADABLE_STORE_IS_EMPTY  rotate.c store_holds_new(): a failed read of
 *       the store counts as "the store does not hold the new token", so a store
 *       write whose answer was lost is undone (the new token revoked) although
 *       the store may hold it.  Design: unknown -> keep the rotation in flight.
 *   CODE_ROTATE_WITH_REVOCATION_DUE rotate.c rotate_integration(): a new rotation
 *       starts although revoke_due() failed, and step_retire() then overwrites
 *       the id of the token still due.  Design: no new token while one is due.
 *   CODE_UNDO_FAILURE_IS_NOTHING    rotate.c recover_flight(): an undo that
 *       cannot be completed sets no outcome, so --rotate-now exits 0.  Modelled
 *       as `reported`: every run that ends with work left must report failure.
 */

/* assert()s of the code paths; the LTL runs (-DLTL_ONLY) leave them out so that
 * each property is judged alone (pan reports a never claim's violation as an
 * assertion too, so pan -A cannot be used to silence these). */
#ifdef LTL_ONLY
#define check(x) skip
#else
#define check(x) assert(x)
#endif

#define NT      4               /* token slots: 0 = the token in the store at start */
#define NOTOK   255
#ifndef MAXRUNS
#define MAXRUNS 4               /* runs with faults and crashes */
#endif
#ifndef MAXCRASH
#define MAXCRASH 2
#endif

/* Onplana token states */
#define NONE    0
#define ACTIVE  1
#define REVOKED 2

/* enum rot_step (src/records.h) */
#define IDLE      0
#define CREATING  1
#define CREATED   2
#define VERIFIED  3
#define WRITTEN   4
#define READ_BACK 5
#define PROMOTED  6
#define HOOKED    7

/* ---- the world ---- */
byte tok[NT];                   /* Onplana: state of each token (its unique name = its slot) */
byte store = NOTOK;             /* the token consumers read from the store (set up: token 0) */

/* ---- patrol's records (state.json + journal): survive crashes ---- */
byte step = IDLE;
byte r_name = NOTOK;            /* new_name, chosen before the create (CREATING) */
bool r_known = false;           /* new_token_id recorded (CREATED and later) */
byte r_old = NOTOK;             /* old_token_id: what the store held at begin() */
byte r_cur = 0;                 /* token_id: the current token */
byte r_revoke = NOTOK;          /* revocation due */

/* ---- one run's memory: lost at a crash ---- */
bool mem_token;                 /* the new token's value (only ever in memory and the store) */
bool faulty = true;             /* faults and crashes possible in this run */
byte crashes = 0;
byte next_slot = 1;
bool reported;                  /* this run reported a failure (exit 1) */
bool done = false;
bool ok;

#define NACTIVE ((tok[0] == ACTIVE) + (tok[1] == ACTIVE) + (tok[2] == ACTIVE) + (tok[3] == ACTIVE))
#define SETTLED (step == IDLE && r_revoke == NOTOK && store != NOTOK && tok[store] == ACTIVE && \
                 r_cur == store && NACTIVE == 1)

ltl store_live { [] (store == NOTOK || tok[store] == ACTIVE) }
ltl one_extra  { [] (NACTIVE <= 2) }
ltl settled    { [] (done -> SETTLED) }

/* records.c records_save() then rotate.c save() -> crash_point(name): the step is
 * durable; patrol may die right after. */
inline save() {
        if
        :: faulty && crashes < MAXCRASH -> crashes++; goto crash
        :: true -> skip
        fi
}

/* A remote call's outcome: ok, or an error (5xx, 429 past retries, drop, TLS). */
inline remote(res) {
        if
        :: faulty -> res = false
        :: true -> res = true
        fi
}

/* onplana.c onplana_revoke(): DELETE is idempotent, 204 whatever the state. */
inline revoke(t) {
        remote(ok);
        if
        :: ok && tok[t] != NONE -> tok[t] = REVOKED
        :: else -> skip
        fi
}

inline clear_flight() {                         /* records.c rec_clear_flight() */
        step = IDLE; r_name = NOTOK; r_known = false; r_old = NOTOK
}

/* rotate.c undo(): the store does not hold the new token: revoke it. */
inline undo() {
        check(store != r_name);
        revoke(r_name);
        if
        :: !ok -> reported = true; goto run_end       /* the flight stays: next run tries again */
        :: else -> clear_flight(); save()              /* crash point "undone" */
        fi
}

/* rotate.c undo_by_name(): a create whose answer may be lost: list by the unique
 * name, revoke what is there. */
inline undo_by_name() {
        remote(ok);                                     /* GET /api/v1/tokens?name= */
        if
        :: !ok ->
                reported = true;
                goto run_end
        :: else -> skip
        fi;
        if
        :: tok[r_name] == ACTIVE -> revoke(r_name);
                if
                :: !ok ->
                        reported = true;
                        goto run_end
                :: else -> skip
                fi
        :: else -> skip
        fi;
        clear_flight(); save()                          /* "undone" */
}

/* rotate.c store_holds_new(): read the store; does it hold the new token?
 * Sets ok = it does; goes to run_end when it cannot tell. */
inline store_holds_new() {
        if
        :: faulty ->                                    /* the read fails */
                reported = true; goto run_end          /* unknown: keep the flight */
        :: true -> ok = (store == r_name)
        fi
}

/* rotate.c step_verify()/verify_token(): GET /api/v1/me with the new token. */
inline verify() {
        check(mem_token && r_known);
        remote(ok);
        ok = ok && tok[r_name] == ACTIVE
}

/* rotate.c advance(): run the steps from wherever the record says. */
inline advance() {
        if
        :: step == CREATED ->                           /* step_verify */
                verify();
                if
                :: !ok -> reported = true; undo(); goto run_end
                :: else -> step = VERIFIED; save()      /* "verified" */
                fi
        :: else -> skip
        fi;
        if
        :: step == VERIFIED ->                          /* step_write (CAS on the version read) */
                check(mem_token);
                if
                :: faulty -> ok = false                          /* refused: not performed */
                :: faulty -> store = r_name; ok = false          /* performed, answer lost */
                :: faulty && crashes < MAXCRASH ->               /* killed mid-write */
                        crashes++;
                        if
                        :: store = r_name
                        :: skip
                        fi;
                        goto crash
                :: true -> store = r_name; ok = true
                fi;
                if
                :: !ok -> store_holds_new()             /* performed, answer lost? */
                :: else -> skip
                fi;
                if
                :: !ok -> reported = true; undo(); goto run_end
                :: else -> step = WRITTEN; save()       /* "written" */
                fi
        :: else -> skip
        fi;
        if
        :: step == WRITTEN ->                           /* step_read_back */
                remote(ok);
                if
                :: !ok -> reported = true; goto run_end          /* incomplete: next run */
                :: ok && store != r_name -> reported = true; undo(); goto run_end
                :: ok && store == r_name -> step = READ_BACK; save()     /* "read_back" */
                fi
        :: else -> skip
        fi;
        if
        :: step == READ_BACK ->                         /* step_promote (Vault: nothing to do) */
                remote(ok);
                if
                :: !ok -> reported = true; goto run_end
                :: else -> step = PROMOTED; r_cur = r_name; save()      /* "promoted" */
                fi
        :: else -> skip
        fi;
        if
        :: step == PROMOTED ->                          /* step_hook (on_rotate) */
                remote(ok);
                if
                :: !ok -> reported = true; goto run_end
                :: else -> step = HOOKED; save()        /* "hooked" */
                fi
        :: else -> skip
        fi;
        if
        :: step == HOOKED ->                            /* finish() + step_retire() */
                if
                :: r_old != NOTOK && r_old != r_name ->
                        revoke(r_old);
                        if
                        :: !ok ->
                                check(r_revoke == NOTOK || r_revoke == r_old);
                                r_revoke = r_old; reported = true
                        :: else -> skip
                        fi
                :: else -> skip
                fi;
                clear_flight(); save()                  /* "finished" */
        :: else -> skip
        fi
}

/* rotate.c revoke_due(): an old token whose revocation is due. */
inline revoke_due() {
        if
        :: r_revoke != NOTOK ->
                revoke(r_revoke);
                if
                :: ok -> r_revoke = NOTOK; save()       /* "revoked" */
                :: else -> reported = true
                        ; goto run_end                  /* no new token while one is due */
                fi
        :: else -> skip
        fi
}

/* rotate.c recover_flight(): resolve a rotation found in flight. */
inline recover_flight() {
        if
        :: step == CREATING -> undo_by_name()
        :: step == CREATED || step == VERIFIED ->       /* recover_before_write() */
                store_holds_new();
                if
                :: ok -> step = WRITTEN; save()         /* "recovered-written" */
                :: else -> undo()
                fi
        :: else -> skip
        fi;
        if
        :: step == WRITTEN || step == READ_BACK ->
                remote(ok);                             /* reload_token(): read back */
                if
                :: !ok || store != r_name -> reported = true; goto run_end
                :: else -> mem_token = true
                fi;
                verify();                               /* verify_token() */
                if
                :: !ok -> reported = true; goto run_end
                :: else -> skip
                fi;
                if
                :: step == WRITTEN -> step = READ_BACK; save()  /* "read_back" */
                :: else -> skip
                fi
        :: else -> skip
        fi;
        if
        :: step != IDLE -> advance(); goto run_end      /* this run's rotation */
        :: else -> skip                                 /* undone: start afresh */
        fi
}

/* rotate.c begin() + step_create(). */
inline begin() {
        if
        :: next_slot == NT -> goto run_end              /* the model's bound on new names */
        :: else -> skip
        fi;
        remote(ok);                                     /* read_prev(): the store's current value */
        if
        :: !ok -> reported = true; goto run_end
        :: else -> skip
        fi;
        r_old = store;
        r_name = next_slot; next_slot++;
        step = CREATING; save();                        /* "creating" */
        if                                              /* onplana_create(): not idempotent */
        :: faulty -> ok = false                         /* refused before being performed */
        :: faulty -> tok[r_name] = ACTIVE; ok = false   /* performed, answer lost */
        :: true -> tok[r_name] = ACTIVE; ok = true
        fi;
        if
        :: !ok -> reported = true; undo_by_name(); goto run_end
        :: else -> skip
        fi;
        if                                              /* crash point "create-answered" */
        :: faulty && crashes < MAXCRASH -> crashes++; goto crash
        :: true -> skip
        fi;
        mem_token = true; r_known = true;
        step = CREATED; save();                         /* "created" */
        advance()
}

active proctype patrol()
{
        byte runs = 0;

        d_step { tok[0] = ACTIVE; store = 0; r_cur = 0 };
run_start:
        if
        :: runs == MAXRUNS + 2 -> goto finish
        :: runs == MAXRUNS -> faulty = false            /* the last two runs: no faults */
        :: else -> skip
        fi;
        runs++;
        mem_token = false;
        reported = false;
        /* rotate.c rotate_integration() */
        if
        :: step != IDLE -> recover_flight()
        :: else -> skip
        fi;
        revoke_due();
        begin();
run_end:
        /* A run that leaves work (a flight, a revocation due) must say so: exit 1. */
        check(reported || (step == IDLE && r_revoke == NOTOK));
        goto run_start;
crash:
        /* _exit(99): memory gone, records and the world stay */
        goto run_start;
finish:
        check(SETTLED);
        done = true
}
