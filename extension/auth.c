/*
 * auth.c — C for the auth service: its settings (JWT algorithm, keys,
 * lifetimes), password hashing, JWT signing and verification, and the login
 * throttle in shared memory.
 */
#include "postgres.h"

#include "isa.h"

void
isa_auth_define_gucs(void)
{
}

void
isa_auth_shmem_request(void)
{
}

void
isa_auth_shmem_startup(void)
{
}
