/*
 * auth.h — what the auth service's C files share and nothing else needs.
 */
#ifndef ISA_AUTH_H
#define ISA_AUTH_H

/* extension/auth.c: the values of isa.jwt_algorithm (isa_jwt_algorithm) */
#define ISA_JWT_EDDSA 0
#define ISA_JWT_HS256 1

#endif							/* ISA_AUTH_H */
