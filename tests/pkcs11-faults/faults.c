/*
 * A PKCS#11 v2.40 module for tests that forwards every call to a real
 * module and fails, delays or alters chosen calls on command.
 *
 * Environment, read once when the application first calls
 * C_GetFunctionList:
 *   HALLMARK_FAULTS_MODULE   the real module (default: the Debian SoftHSM2
 *                            path /usr/lib/softhsm/libsofthsm2.so)
 *   HALLMARK_FAULTS_CONTROL  the control file of rules; unset, missing or
 *                            empty means that every call is forwarded
 *   HALLMARK_FAULTS_COUNTS   optional file that receives per-function call
 *                            counts after every call
 *
 * README.md in this directory describes the control and counts formats.
 *
 * Link with -Wl,-z,nodelete. An application that finalizes the module and
 * loads it again, as a reconnect does, then finds the rule counts, the
 * call counts and the loaded real module as it left them, because dlclose
 * does not unload this module.
 *
 * The module exports C_GetFunctionList only. cryptoki 0.12 calls
 * C_GetInterface when a module exports it and uses its list when that
 * list is version 3 or later, so exporting it could hand the application
 * the real module's list. Without it, cryptoki and any other application
 * get this module's 2.40 list, even when the real module implements 3.0.
 */

#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define EXPORTED __attribute__((visibility("default")))

#define DEFAULT_REAL_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define LOG_PREFIX "hallmark-faults: "

/* Limits that keep the parser simple. A test needs a handful of rules. */
#define MAX_RULES 128
#define MAX_DROPS 8
#define MAX_CONTROL_BYTES 65536
#define MAX_DELAY_MS 600000L

/* Every function of the v2.40 function list, in the list's order. */
#define ALL_FUNCTIONS(X)                                                     \
    X(C_Initialize) X(C_Finalize) X(C_GetInfo) X(C_GetFunctionList)          \
    X(C_GetSlotList) X(C_GetSlotInfo) X(C_GetTokenInfo)                      \
    X(C_GetMechanismList) X(C_GetMechanismInfo) X(C_InitToken) X(C_InitPIN)  \
    X(C_SetPIN) X(C_OpenSession) X(C_CloseSession) X(C_CloseAllSessions)     \
    X(C_GetSessionInfo) X(C_GetOperationState) X(C_SetOperationState)        \
    X(C_Login) X(C_Logout) X(C_CreateObject) X(C_CopyObject)                 \
    X(C_DestroyObject) X(C_GetObjectSize) X(C_GetAttributeValue)             \
    X(C_SetAttributeValue) X(C_FindObjectsInit) X(C_FindObjects)             \
    X(C_FindObjectsFinal) X(C_EncryptInit) X(C_Encrypt) X(C_EncryptUpdate)   \
    X(C_EncryptFinal) X(C_DecryptInit) X(C_Decrypt) X(C_DecryptUpdate)       \
    X(C_DecryptFinal) X(C_DigestInit) X(C_Digest) X(C_DigestUpdate)          \
    X(C_DigestKey) X(C_DigestFinal) X(C_SignInit) X(C_Sign) X(C_SignUpdate)  \
    X(C_SignFinal) X(C_SignRecoverInit) X(C_SignRecover) X(C_VerifyInit)     \
    X(C_Verify) X(C_VerifyUpdate) X(C_VerifyFinal) X(C_VerifyRecoverInit)    \
    X(C_VerifyRecover) X(C_DigestEncryptUpdate) X(C_DecryptDigestUpdate)     \
    X(C_SignEncryptUpdate) X(C_DecryptVerifyUpdate) X(C_GenerateKey)         \
    X(C_GenerateKeyPair) X(C_WrapKey) X(C_UnwrapKey) X(C_DeriveKey)          \
    X(C_SeedRandom) X(C_GenerateRandom) X(C_GetFunctionStatus)               \
    X(C_CancelFunction) X(C_WaitForSlotEvent)

/*
 * Functions whose wrapper only applies the rules and forwards: name,
 * parameter list, argument list.
 *
 * NOTE: an injected failure of an update function (C_SignUpdate,
 * C_EncryptUpdate and the like) leaves the operation active in the real
 * module, although PKCS#11 ends it. Only the single-part and final calls
 * below end it.
 */
#define PLAIN_FUNCTIONS(X)                                                   \
    X(C_Initialize, (CK_VOID_PTR init_args), (init_args))                    \
    X(C_Finalize, (CK_VOID_PTR reserved_arg), (reserved_arg))                \
    X(C_GetInfo, (CK_INFO_PTR info), (info))                                 \
    X(C_GetSlotList,                                                         \
      (CK_BBOOL token_present, CK_SLOT_ID_PTR slots, CK_ULONG_PTR slot_count), \
      (token_present, slots, slot_count))                                    \
    X(C_GetSlotInfo, (CK_SLOT_ID slot, CK_SLOT_INFO_PTR info), (slot, info)) \
    X(C_GetTokenInfo, (CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info),             \
      (slot, info))                                                          \
    X(C_GetMechanismInfo,                                                    \
      (CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info), \
      (slot, type, info))                                                    \
    X(C_InitToken,                                                           \
      (CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len,               \
       CK_UTF8CHAR_PTR label),                                               \
      (slot, pin, pin_len, label))                                           \
    X(C_InitPIN,                                                             \
      (CK_SESSION_HANDLE session, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len),    \
      (session, pin, pin_len))                                               \
    X(C_SetPIN,                                                              \
      (CK_SESSION_HANDLE session, CK_UTF8CHAR_PTR old_pin, CK_ULONG old_len, \
       CK_UTF8CHAR_PTR new_pin, CK_ULONG new_len),                           \
      (session, old_pin, old_len, new_pin, new_len))                         \
    X(C_OpenSession,                                                         \
      (CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR application,             \
       CK_NOTIFY notify, CK_SESSION_HANDLE_PTR session),                     \
      (slot, flags, application, notify, session))                           \
    X(C_CloseSession, (CK_SESSION_HANDLE session), (session))                \
    X(C_CloseAllSessions, (CK_SLOT_ID slot), (slot))                         \
    X(C_GetSessionInfo, (CK_SESSION_HANDLE session, CK_SESSION_INFO_PTR info), \
      (session, info))                                                       \
    X(C_GetOperationState,                                                   \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR state, CK_ULONG_PTR state_len), \
      (session, state, state_len))                                           \
    X(C_SetOperationState,                                                   \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR state, CK_ULONG state_len,     \
       CK_OBJECT_HANDLE encryption_key, CK_OBJECT_HANDLE authentication_key), \
      (session, state, state_len, encryption_key, authentication_key))       \
    X(C_Login,                                                               \
      (CK_SESSION_HANDLE session, CK_USER_TYPE user_type, CK_UTF8CHAR_PTR pin, \
       CK_ULONG pin_len),                                                    \
      (session, user_type, pin, pin_len))                                    \
    X(C_Logout, (CK_SESSION_HANDLE session), (session))                      \
    X(C_CreateObject,                                                        \
      (CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR attributes,               \
       CK_ULONG attribute_count, CK_OBJECT_HANDLE_PTR object),               \
      (session, attributes, attribute_count, object))                        \
    X(C_CopyObject,                                                          \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,                   \
       CK_ATTRIBUTE_PTR attributes, CK_ULONG attribute_count,                \
       CK_OBJECT_HANDLE_PTR new_object),                                     \
      (session, object, attributes, attribute_count, new_object))            \
    X(C_DestroyObject, (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object), \
      (session, object))                                                     \
    X(C_GetObjectSize,                                                       \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ULONG_PTR size), \
      (session, object, size))                                               \
    X(C_GetAttributeValue,                                                   \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,                   \
       CK_ATTRIBUTE_PTR attributes, CK_ULONG attribute_count),               \
      (session, object, attributes, attribute_count))                        \
    X(C_SetAttributeValue,                                                   \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,                   \
       CK_ATTRIBUTE_PTR attributes, CK_ULONG attribute_count),               \
      (session, object, attributes, attribute_count))                        \
    X(C_FindObjectsInit,                                                     \
      (CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR attributes,               \
       CK_ULONG attribute_count),                                            \
      (session, attributes, attribute_count))                                \
    X(C_FindObjects,                                                         \
      (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE_PTR objects,              \
       CK_ULONG max_objects, CK_ULONG_PTR found),                            \
      (session, objects, max_objects, found))                                \
    X(C_FindObjectsFinal, (CK_SESSION_HANDLE session), (session))            \
    X(C_EncryptInit,                                                         \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE key),                                                \
      (session, mechanism, key))                                             \
    X(C_EncryptUpdate,                                                       \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len,       \
       CK_BYTE_PTR out, CK_ULONG_PTR out_len),                               \
      (session, part, part_len, out, out_len))                               \
    X(C_DecryptInit,                                                         \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE key),                                                \
      (session, mechanism, key))                                             \
    X(C_DecryptUpdate,                                                       \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len,       \
       CK_BYTE_PTR out, CK_ULONG_PTR out_len),                               \
      (session, part, part_len, out, out_len))                               \
    X(C_DigestInit, (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism), \
      (session, mechanism))                                                  \
    X(C_DigestUpdate,                                                        \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len),      \
      (session, part, part_len))                                             \
    X(C_DigestKey, (CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key),        \
      (session, key))                                                        \
    X(C_SignInit,                                                            \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE key),                                                \
      (session, mechanism, key))                                             \
    X(C_SignUpdate,                                                          \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len),      \
      (session, part, part_len))                                             \
    X(C_SignRecoverInit,                                                     \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE key),                                                \
      (session, mechanism, key))                                             \
    X(C_VerifyInit,                                                          \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE key),                                                \
      (session, mechanism, key))                                             \
    X(C_VerifyUpdate,                                                        \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len),      \
      (session, part, part_len))                                             \
    X(C_VerifyRecoverInit,                                                   \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE key),                                                \
      (session, mechanism, key))                                             \
    X(C_DigestEncryptUpdate,                                                 \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len,       \
       CK_BYTE_PTR out, CK_ULONG_PTR out_len),                               \
      (session, part, part_len, out, out_len))                               \
    X(C_DecryptDigestUpdate,                                                 \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len,       \
       CK_BYTE_PTR out, CK_ULONG_PTR out_len),                               \
      (session, part, part_len, out, out_len))                               \
    X(C_SignEncryptUpdate,                                                   \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len,       \
       CK_BYTE_PTR out, CK_ULONG_PTR out_len),                               \
      (session, part, part_len, out, out_len))                               \
    X(C_DecryptVerifyUpdate,                                                 \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len,       \
       CK_BYTE_PTR out, CK_ULONG_PTR out_len),                               \
      (session, part, part_len, out, out_len))                               \
    X(C_GenerateKey,                                                         \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_ATTRIBUTE_PTR attributes, CK_ULONG attribute_count,                \
       CK_OBJECT_HANDLE_PTR key),                                            \
      (session, mechanism, attributes, attribute_count, key))                \
    X(C_GenerateKeyPair,                                                     \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_ATTRIBUTE_PTR public_attributes, CK_ULONG public_count,            \
       CK_ATTRIBUTE_PTR private_attributes, CK_ULONG private_count,          \
       CK_OBJECT_HANDLE_PTR public_key, CK_OBJECT_HANDLE_PTR private_key),   \
      (session, mechanism, public_attributes, public_count,                  \
       private_attributes, private_count, public_key, private_key))          \
    X(C_WrapKey,                                                             \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key,                  \
       CK_BYTE_PTR wrapped, CK_ULONG_PTR wrapped_len),                       \
      (session, mechanism, wrapping_key, key, wrapped, wrapped_len))         \
    X(C_UnwrapKey,                                                           \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE unwrapping_key, CK_BYTE_PTR wrapped,                 \
       CK_ULONG wrapped_len, CK_ATTRIBUTE_PTR attributes,                    \
       CK_ULONG attribute_count, CK_OBJECT_HANDLE_PTR key),                  \
      (session, mechanism, unwrapping_key, wrapped, wrapped_len, attributes, \
       attribute_count, key))                                                \
    X(C_DeriveKey,                                                           \
      (CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,                \
       CK_OBJECT_HANDLE base_key, CK_ATTRIBUTE_PTR attributes,               \
       CK_ULONG attribute_count, CK_OBJECT_HANDLE_PTR key),                  \
      (session, mechanism, base_key, attributes, attribute_count, key))      \
    X(C_SeedRandom,                                                          \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR seed, CK_ULONG seed_len),      \
      (session, seed, seed_len))                                             \
    X(C_GenerateRandom,                                                      \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR out, CK_ULONG out_len),        \
      (session, out, out_len))                                               \
    X(C_GetFunctionStatus, (CK_SESSION_HANDLE session), (session))           \
    X(C_CancelFunction, (CK_SESSION_HANDLE session), (session))              \
    X(C_WaitForSlotEvent,                                                    \
      (CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved_arg),       \
      (flags, slot, reserved_arg))

/*
 * Single-part calls that end an operation, all with the parameters
 * (session, input, input length, output, output length pointer).
 */
#define SINGLE_PART_FUNCTIONS(X)                                             \
    X(C_Encrypt) X(C_Decrypt) X(C_Digest) X(C_Sign) X(C_SignRecover)         \
    X(C_VerifyRecover)

/* Final calls that end an operation: (session, output, length pointer). */
#define FINAL_FUNCTIONS(X)                                                   \
    X(C_EncryptFinal) X(C_DecryptFinal) X(C_DigestFinal) X(C_SignFinal)

/* Verification calls that end an operation and produce no output. */
#define VERIFY_FUNCTIONS(X)                                                  \
    X(C_Verify,                                                              \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,       \
       CK_BYTE_PTR signature, CK_ULONG signature_len),                       \
      (session, data, data_len, signature, signature_len))                   \
    X(C_VerifyFinal,                                                         \
      (CK_SESSION_HANDLE session, CK_BYTE_PTR signature,                     \
       CK_ULONG signature_len),                                              \
      (session, signature, signature_len))

#define AS_ENUM(name) FN_##name,
enum function { ALL_FUNCTIONS(AS_ENUM) FUNCTION_COUNT };
#undef AS_ENUM

#define AS_STRING(name) #name,
static const char *const function_names[FUNCTION_COUNT] = {
    ALL_FUNCTIONS(AS_STRING)
};
#undef AS_STRING

/* One line of the control file. */
struct rule {
    enum function function;
    int fails;               /* whether the call returns `rv` */
    CK_RV rv;
    long delay_ms;           /* sleep before the call, 0 for none */
    long times;              /* calls left to act on, -1 for unlimited */
    long skip;               /* calls to let through before acting */
    size_t drop_count;
    CK_MECHANISM_TYPE drops[MAX_DROPS];
};

/* What the rules decided for one call. */
struct action {
    int fails;
    CK_RV rv;
    size_t drop_count;
    CK_MECHANISM_TYPE drops[MAX_DROPS];
};

/* The identity of one version of the control file. */
struct file_stamp {
    int exists;
    dev_t device;
    ino_t inode;
    off_t size;
    struct timespec modified;
    struct timespec changed;
};

/* Guards everything below it. */
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST_PTR real;
static const char *control_path;
static const char *counts_path;
static char *counts_partial_path;
static int counts_error_reported;
static struct file_stamp control_stamp;
static struct rule rules[MAX_RULES];
static size_t rule_count;
static unsigned long long calls[FUNCTION_COUNT];
static unsigned long long failures[FUNCTION_COUNT];

#define NAMED(constant) {#constant, constant},

struct named_value {
    const char *name;
    CK_ULONG value;
};

/* Every return value that the v2.40 header defines. */
static const struct named_value return_values[] = {
    NAMED(CKR_OK) NAMED(CKR_CANCEL) NAMED(CKR_HOST_MEMORY)
    NAMED(CKR_SLOT_ID_INVALID) NAMED(CKR_GENERAL_ERROR)
    NAMED(CKR_FUNCTION_FAILED) NAMED(CKR_ARGUMENTS_BAD) NAMED(CKR_NO_EVENT)
    NAMED(CKR_NEED_TO_CREATE_THREADS) NAMED(CKR_CANT_LOCK)
    NAMED(CKR_ATTRIBUTE_READ_ONLY) NAMED(CKR_ATTRIBUTE_SENSITIVE)
    NAMED(CKR_ATTRIBUTE_TYPE_INVALID) NAMED(CKR_ATTRIBUTE_VALUE_INVALID)
    NAMED(CKR_ACTION_PROHIBITED) NAMED(CKR_DATA_INVALID)
    NAMED(CKR_DATA_LEN_RANGE) NAMED(CKR_DEVICE_ERROR) NAMED(CKR_DEVICE_MEMORY)
    NAMED(CKR_DEVICE_REMOVED) NAMED(CKR_ENCRYPTED_DATA_INVALID)
    NAMED(CKR_ENCRYPTED_DATA_LEN_RANGE) NAMED(CKR_FUNCTION_CANCELED)
    NAMED(CKR_FUNCTION_NOT_PARALLEL) NAMED(CKR_FUNCTION_NOT_SUPPORTED)
    NAMED(CKR_KEY_HANDLE_INVALID) NAMED(CKR_KEY_SIZE_RANGE)
    NAMED(CKR_KEY_TYPE_INCONSISTENT) NAMED(CKR_KEY_NOT_NEEDED)
    NAMED(CKR_KEY_CHANGED) NAMED(CKR_KEY_NEEDED) NAMED(CKR_KEY_INDIGESTIBLE)
    NAMED(CKR_KEY_FUNCTION_NOT_PERMITTED) NAMED(CKR_KEY_NOT_WRAPPABLE)
    NAMED(CKR_KEY_UNEXTRACTABLE) NAMED(CKR_MECHANISM_INVALID)
    NAMED(CKR_MECHANISM_PARAM_INVALID) NAMED(CKR_OBJECT_HANDLE_INVALID)
    NAMED(CKR_OPERATION_ACTIVE) NAMED(CKR_OPERATION_NOT_INITIALIZED)
    NAMED(CKR_PIN_INCORRECT) NAMED(CKR_PIN_INVALID) NAMED(CKR_PIN_LEN_RANGE)
    NAMED(CKR_PIN_EXPIRED) NAMED(CKR_PIN_LOCKED) NAMED(CKR_SESSION_CLOSED)
    NAMED(CKR_SESSION_COUNT) NAMED(CKR_SESSION_HANDLE_INVALID)
    NAMED(CKR_SESSION_PARALLEL_NOT_SUPPORTED) NAMED(CKR_SESSION_READ_ONLY)
    NAMED(CKR_SESSION_EXISTS) NAMED(CKR_SESSION_READ_ONLY_EXISTS)
    NAMED(CKR_SESSION_READ_WRITE_SO_EXISTS) NAMED(CKR_SIGNATURE_INVALID)
    NAMED(CKR_SIGNATURE_LEN_RANGE) NAMED(CKR_TEMPLATE_INCOMPLETE)
    NAMED(CKR_TEMPLATE_INCONSISTENT) NAMED(CKR_TOKEN_NOT_PRESENT)
    NAMED(CKR_TOKEN_NOT_RECOGNIZED) NAMED(CKR_TOKEN_WRITE_PROTECTED)
    NAMED(CKR_UNWRAPPING_KEY_SIZE_RANGE)
    NAMED(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT)
    NAMED(CKR_USER_ALREADY_LOGGED_IN) NAMED(CKR_USER_NOT_LOGGED_IN)
    NAMED(CKR_USER_PIN_NOT_INITIALIZED) NAMED(CKR_USER_TYPE_INVALID)
    NAMED(CKR_USER_ANOTHER_ALREADY_LOGGED_IN) NAMED(CKR_USER_TOO_MANY_TYPES)
    NAMED(CKR_WRAPPED_KEY_INVALID) NAMED(CKR_WRAPPED_KEY_LEN_RANGE)
    NAMED(CKR_WRAPPING_KEY_HANDLE_INVALID) NAMED(CKR_WRAPPING_KEY_SIZE_RANGE)
    NAMED(CKR_WRAPPING_KEY_TYPE_INCONSISTENT)
    NAMED(CKR_RANDOM_SEED_NOT_SUPPORTED) NAMED(CKR_RANDOM_NO_RNG)
    NAMED(CKR_DOMAIN_PARAMS_INVALID) NAMED(CKR_CURVE_NOT_SUPPORTED)
    NAMED(CKR_BUFFER_TOO_SMALL) NAMED(CKR_SAVED_STATE_INVALID)
    NAMED(CKR_INFORMATION_SENSITIVE) NAMED(CKR_STATE_UNSAVEABLE)
    NAMED(CKR_CRYPTOKI_NOT_INITIALIZED) NAMED(CKR_CRYPTOKI_ALREADY_INITIALIZED)
    NAMED(CKR_MUTEX_BAD) NAMED(CKR_MUTEX_NOT_LOCKED) NAMED(CKR_NEW_PIN_MODE)
    NAMED(CKR_NEXT_OTP) NAMED(CKR_EXCEEDED_MAX_ITERATIONS)
    NAMED(CKR_FIPS_SELF_TEST_FAILED) NAMED(CKR_LIBRARY_LOAD_FAILED)
    NAMED(CKR_PIN_TOO_WEAK) NAMED(CKR_PUBLIC_KEY_INVALID)
    NAMED(CKR_FUNCTION_REJECTED)
};

/* The mechanisms that Hallmark generates keys and signs with. */
static const struct named_value mechanisms[] = {
    NAMED(CKM_RSA_PKCS_KEY_PAIR_GEN) NAMED(CKM_RSA_PKCS)
    NAMED(CKM_RSA_PKCS_PSS) NAMED(CKM_SHA256_RSA_PKCS)
    NAMED(CKM_SHA256_RSA_PKCS_PSS) NAMED(CKM_SHA384_RSA_PKCS_PSS)
    NAMED(CKM_EC_KEY_PAIR_GEN) NAMED(CKM_ECDSA) NAMED(CKM_ECDSA_SHA256)
    NAMED(CKM_ECDSA_SHA384) NAMED(CKM_EC_EDWARDS_KEY_PAIR_GEN)
    NAMED(CKM_EDDSA) NAMED(CKM_SHA256) NAMED(CKM_SHA384)
};

#undef NAMED

/* ---------------------------------------------------------------------
 * Control file
 * ------------------------------------------------------------------ */

static void report_line(unsigned line_number, const char *reason,
                        const char *line)
{
    fprintf(stderr, LOG_PREFIX "%s line %u ignored: %s: %s\n", control_path,
            line_number, reason, line);
}

/* Parses a whole decimal number from 0 to `max` and returns 0 on success. */
static int parse_count(const char *text, long max, long *out)
{
    char *end;
    long value;

    if (*text < '0' || *text > '9')
        return -1;
    errno = 0;
    value = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value > max)
        return -1;
    *out = value;
    return 0;
}

/* Looks up a CKR_ or CKM_ name, or parses a 0x or decimal number. */
static int parse_named(const char *text, const struct named_value *table,
                       size_t table_len, CK_ULONG *out)
{
    size_t i;
    char *end;
    unsigned long value;

    for (i = 0; i < table_len; i++) {
        if (strcmp(text, table[i].name) == 0) {
            *out = table[i].value;
            return 0;
        }
    }
    if (*text < '0' || *text > '9')
        return -1;
    errno = 0;
    value = strtoul(text, &end, 0);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = value;
    return 0;
}

static int lookup_function(const char *name, enum function *out)
{
    int i;

    for (i = 0; i < FUNCTION_COUNT; i++) {
        if (strcmp(name, function_names[i]) == 0) {
            *out = (enum function)i;
            return 0;
        }
    }
    return -1;
}

/*
 * Parses one line into `rule`. Returns 1 for a rule, 0 for a blank or
 * comment line, and -1 after reporting a line that is not a rule.
 */
static int parse_rule(char *line, unsigned line_number, struct rule *rule)
{
    char original[256];
    char *comment, *token, *saved;
    int has_effect = 0;

    comment = strchr(line, '#');
    if (comment != NULL)
        *comment = '\0';
    snprintf(original, sizeof original, "%s", line);

    token = strtok_r(line, " \t\r", &saved);
    if (token == NULL)
        return 0;
    memset(rule, 0, sizeof *rule);
    rule->times = -1;
    if (lookup_function(token, &rule->function) != 0) {
        report_line(line_number, "unknown PKCS#11 function", original);
        return -1;
    }

    while ((token = strtok_r(NULL, " \t\r", &saved)) != NULL) {
        CK_ULONG value;

        if (strncmp(token, "times=", 6) == 0) {
            if (parse_count(token + 6, 1000000000L, &rule->times) != 0) {
                report_line(line_number, "times= needs a whole number",
                            original);
                return -1;
            }
        } else if (strncmp(token, "skip=", 5) == 0) {
            if (parse_count(token + 5, 1000000000L, &rule->skip) != 0) {
                report_line(line_number, "skip= needs a whole number",
                            original);
                return -1;
            }
        } else if (strncmp(token, "delay_ms=", 9) == 0) {
            if (parse_count(token + 9, MAX_DELAY_MS, &rule->delay_ms) != 0) {
                report_line(line_number,
                            "delay_ms= needs milliseconds from 0 to 600000",
                            original);
                return -1;
            }
            has_effect = 1;
        } else if (strncmp(token, "drop=", 5) == 0) {
            if (rule->function != FN_C_GetMechanismList) {
                report_line(line_number,
                            "drop= applies to C_GetMechanismList only",
                            original);
                return -1;
            }
            if (rule->drop_count == MAX_DROPS
                || parse_named(token + 5, mechanisms,
                               sizeof mechanisms / sizeof mechanisms[0],
                               &value) != 0) {
                report_line(line_number,
                            "drop= needs a known CKM_ name or a number, "
                            "at most 8 per rule", original);
                return -1;
            }
            rule->drops[rule->drop_count++] = value;
            has_effect = 1;
        } else if (parse_named(token, return_values,
                               sizeof return_values / sizeof return_values[0],
                               &value) == 0) {
            if (value == CKR_OK || rule->fails) {
                report_line(line_number,
                            "a rule takes one return value other than CKR_OK",
                            original);
                return -1;
            }
            rule->fails = 1;
            rule->rv = value;
            has_effect = 1;
        } else {
            report_line(line_number, "unknown word", original);
            return -1;
        }
    }
    if (!has_effect) {
        report_line(line_number,
                    "a rule needs a return value, delay_ms= or drop=",
                    original);
        return -1;
    }
    return 1;
}

/* Replaces the rules with those in `text`, which is changed in place. */
static void parse_rules(char *text)
{
    char *line = text;
    unsigned line_number = 0;

    rule_count = 0;
    while (line != NULL) {
        char *next = strchr(line, '\n');
        struct rule rule;

        if (next != NULL)
            *next++ = '\0';
        line_number++;
        if (parse_rule(line, line_number, &rule) == 1) {
            if (rule_count == MAX_RULES)
                report_line(line_number, "more than 128 rules", "");
            else
                rules[rule_count++] = rule;
        }
        line = next;
    }
}

static int same_time(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static int same_stamp(const struct file_stamp *a, const struct file_stamp *b)
{
    if (a->exists != b->exists)
        return 0;
    if (!a->exists)
        return 1;
    return a->device == b->device && a->inode == b->inode
           && a->size == b->size && same_time(&a->modified, &b->modified)
           && same_time(&a->changed, &b->changed);
}

/*
 * Re-reads the control file when its inode, size, modification or change
 * time differs from the version that the rules came from. Called with
 * `state_lock` held. A changed file resets every rule's times= and skip=.
 */
static void reload_rules_if_changed(void)
{
    struct stat info;
    struct file_stamp stamp;
    FILE *file;
    char *text;
    size_t length;

    if (control_path == NULL)
        return;
    memset(&stamp, 0, sizeof stamp);
    if (stat(control_path, &info) == 0) {
        stamp.exists = 1;
        stamp.device = info.st_dev;
        stamp.inode = info.st_ino;
        stamp.size = info.st_size;
        stamp.modified = info.st_mtim;
        stamp.changed = info.st_ctim;
    }
    if (same_stamp(&stamp, &control_stamp))
        return;
    control_stamp = stamp;
    rule_count = 0;
    if (!stamp.exists)
        return;

    file = fopen(control_path, "r");
    if (file == NULL) {
        fprintf(stderr, LOG_PREFIX "cannot read %s, so no rules apply: %s\n",
                control_path, strerror(errno));
        return;
    }
    text = malloc(MAX_CONTROL_BYTES + 1);
    if (text == NULL) {
        fclose(file);
        return;
    }
    length = fread(text, 1, MAX_CONTROL_BYTES, file);
    if (length == MAX_CONTROL_BYTES && fgetc(file) != EOF)
        fprintf(stderr, LOG_PREFIX "%s: only the first %d bytes are read\n",
                control_path, MAX_CONTROL_BYTES);
    fclose(file);
    text[length] = '\0';
    parse_rules(text);
    free(text);
}

/* ---------------------------------------------------------------------
 * Counts file
 * ------------------------------------------------------------------ */

/*
 * Writes every function's call and failure counts to a temporary file and
 * renames it over the counts file, so that a reader never sees a partial
 * file. Called with `state_lock` held.
 */
static void write_counts(void)
{
    FILE *file;
    int i;

    if (counts_path == NULL || counts_partial_path == NULL)
        return;
    file = fopen(counts_partial_path, "w");
    if (file == NULL)
        goto failed;
    for (i = 0; i < FUNCTION_COUNT; i++) {
        if (calls[i] > 0)
            fprintf(file, "%s %llu %llu\n", function_names[i], calls[i],
                    failures[i]);
    }
    if (fclose(file) != 0 || rename(counts_partial_path, counts_path) != 0)
        goto failed;
    return;

failed:
    if (!counts_error_reported) {
        fprintf(stderr, LOG_PREFIX "cannot write %s: %s\n", counts_path,
                strerror(errno));
        counts_error_reported = 1;
    }
    unlink(counts_partial_path);
}

/* ---------------------------------------------------------------------
 * Applying the rules
 * ------------------------------------------------------------------ */

static void sleep_ms(long milliseconds)
{
    struct timespec left;

    left.tv_sec = milliseconds / 1000;
    left.tv_nsec = (milliseconds % 1000) * 1000000L;
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

/*
 * Counts a call of `function` and applies the first rule for it that is
 * still active: sleeps for its delay, outside the lock, and returns
 * whether the call must fail with `action->rv`. A rule's skip= counts
 * every call of its function, even one that an earlier rule acted on.
 */
static int apply_rules(enum function function, struct action *action)
{
    struct rule *chosen = NULL;
    long delay_ms = 0;
    size_t i;

    memset(action, 0, sizeof *action);
    pthread_mutex_lock(&state_lock);
    calls[function]++;
    reload_rules_if_changed();
    for (i = 0; i < rule_count; i++) {
        struct rule *rule = &rules[i];

        if (rule->function != function)
            continue;
        if (rule->skip > 0) {
            rule->skip--;
            continue;
        }
        if (rule->times == 0 || chosen != NULL)
            continue;
        chosen = rule;
        if (rule->times > 0)
            rule->times--;
    }
    if (chosen != NULL) {
        action->fails = chosen->fails;
        action->rv = chosen->rv;
        action->drop_count = chosen->drop_count;
        memcpy(action->drops, chosen->drops, sizeof action->drops);
        delay_ms = chosen->delay_ms;
        if (chosen->fails)
            failures[function]++;
    }
    write_counts();
    pthread_mutex_unlock(&state_lock);

    if (delay_ms > 0)
        sleep_ms(delay_ms);
    return action->fails;
}

/* ---------------------------------------------------------------------
 * Wrappers
 * ------------------------------------------------------------------ */

#define PLAIN_WRAPPER(name, params, args)                                    \
    static CK_RV wrap_##name params                                          \
    {                                                                        \
        struct action action;                                                \
                                                                             \
        if (apply_rules(FN_##name, &action))                                 \
            return action.rv;                                                \
        if (real->name == NULL)                                              \
            return CKR_FUNCTION_NOT_SUPPORTED;                               \
        return real->name args;                                              \
    }
PLAIN_FUNCTIONS(PLAIN_WRAPPER)
#undef PLAIN_WRAPPER

/*
 * PKCS#11 ends an operation when one of its calls fails with anything but
 * CKR_BUFFER_TOO_SMALL. Before an injected failure of a call that ends
 * the operation, the wrappers below make the same call in the real module
 * with a buffer of their own and discard the result. The session is then
 * left without an active operation, as after a real failure.
 */

static void end_single_part(CK_C_Sign call, CK_SESSION_HANDLE session,
                            CK_BYTE_PTR input, CK_ULONG input_len)
{
    CK_ULONG length = 0;
    CK_BYTE_PTR output;

    if (call == NULL || call(session, input, input_len, NULL, &length) != CKR_OK)
        return;
    output = malloc(length > 0 ? length : 1);
    if (output == NULL)
        return;
    call(session, input, input_len, output, &length);
    free(output);
}

static void end_final(CK_C_SignFinal call, CK_SESSION_HANDLE session)
{
    CK_ULONG length = 0;
    CK_BYTE_PTR output;

    if (call == NULL || call(session, NULL, &length) != CKR_OK)
        return;
    output = malloc(length > 0 ? length : 1);
    if (output == NULL)
        return;
    call(session, output, &length);
    free(output);
}

#define SINGLE_PART_WRAPPER(name)                                            \
    static CK_RV wrap_##name(CK_SESSION_HANDLE session, CK_BYTE_PTR input,   \
                             CK_ULONG input_len, CK_BYTE_PTR output,         \
                             CK_ULONG_PTR output_len)                        \
    {                                                                        \
        struct action action;                                                \
                                                                             \
        if (apply_rules(FN_##name, &action)) {                               \
            end_single_part(real->name, session, input, input_len);          \
            return action.rv;                                                \
        }                                                                    \
        if (real->name == NULL)                                              \
            return CKR_FUNCTION_NOT_SUPPORTED;                               \
        return real->name(session, input, input_len, output, output_len);    \
    }
SINGLE_PART_FUNCTIONS(SINGLE_PART_WRAPPER)
#undef SINGLE_PART_WRAPPER

#define FINAL_WRAPPER(name)                                                  \
    static CK_RV wrap_##name(CK_SESSION_HANDLE session, CK_BYTE_PTR output,  \
                             CK_ULONG_PTR output_len)                        \
    {                                                                        \
        struct action action;                                                \
                                                                             \
        if (apply_rules(FN_##name, &action)) {                               \
            end_final(real->name, session);                                  \
            return action.rv;                                                \
        }                                                                    \
        if (real->name == NULL)                                              \
            return CKR_FUNCTION_NOT_SUPPORTED;                               \
        return real->name(session, output, output_len);                      \
    }
FINAL_FUNCTIONS(FINAL_WRAPPER)
#undef FINAL_WRAPPER

#define VERIFY_WRAPPER(name, params, args)                                   \
    static CK_RV wrap_##name params                                          \
    {                                                                        \
        struct action action;                                                \
                                                                             \
        if (apply_rules(FN_##name, &action)) {                               \
            if (real->name != NULL)                                          \
                (void)real->name args;                                       \
            return action.rv;                                                \
        }                                                                    \
        if (real->name == NULL)                                              \
            return CKR_FUNCTION_NOT_SUPPORTED;                               \
        return real->name args;                                              \
    }
VERIFY_FUNCTIONS(VERIFY_WRAPPER)
#undef VERIFY_WRAPPER

/*
 * Forwards C_GetMechanismList and removes the mechanisms of a drop= rule
 * from the list, with the usual size-query and CKR_BUFFER_TOO_SMALL
 * behaviour for the shorter list.
 */
static CK_RV wrap_C_GetMechanismList(CK_SLOT_ID slot,
                                     CK_MECHANISM_TYPE_PTR list,
                                     CK_ULONG_PTR list_len)
{
    struct action action;
    CK_MECHANISM_TYPE_PTR all;
    CK_ULONG all_len = 0, kept = 0, i;
    size_t d;
    CK_RV rv;

    if (apply_rules(FN_C_GetMechanismList, &action))
        return action.rv;
    if (real->C_GetMechanismList == NULL)
        return CKR_FUNCTION_NOT_SUPPORTED;
    if (action.drop_count == 0)
        return real->C_GetMechanismList(slot, list, list_len);
    if (list_len == NULL)
        return CKR_ARGUMENTS_BAD;

    rv = real->C_GetMechanismList(slot, NULL, &all_len);
    if (rv != CKR_OK)
        return rv;
    all = calloc(all_len > 0 ? all_len : 1, sizeof *all);
    if (all == NULL)
        return CKR_HOST_MEMORY;
    rv = real->C_GetMechanismList(slot, all, &all_len);
    if (rv != CKR_OK) {
        free(all);
        return rv;
    }
    for (i = 0; i < all_len; i++) {
        int dropped = 0;

        for (d = 0; d < action.drop_count; d++)
            dropped |= all[i] == action.drops[d];
        if (!dropped)
            all[kept++] = all[i];
    }
    if (list == NULL) {
        rv = CKR_OK;
    } else if (*list_len < kept) {
        rv = CKR_BUFFER_TOO_SMALL;
    } else {
        memcpy(list, all, kept * sizeof *all);
        rv = CKR_OK;
    }
    *list_len = kept;
    free(all);
    return rv;
}

static CK_RV wrap_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

#define LIST_ENTRY(name) .name = wrap_##name,
static CK_FUNCTION_LIST wrapper_list = {
    .version = {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR},
    ALL_FUNCTIONS(LIST_ENTRY)
};
#undef LIST_ENTRY

/* ---------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------ */

static const char *nonempty_env(const char *name)
{
    const char *value = getenv(name);

    return value != NULL && *value != '\0' ? value : NULL;
}

/*
 * Reads the environment and loads the real module once. The module stays
 * loaded until the process exits. Called with `state_lock` held. Returns
 * 0 when the real function list is available.
 */
static int load_real_module(void)
{
    static int attempted;
    const char *path;
    void *library;
    CK_C_GetFunctionList get_list;

    if (attempted)
        return real != NULL ? 0 : -1;
    attempted = 1;

    control_path = nonempty_env("HALLMARK_FAULTS_CONTROL");
    counts_path = nonempty_env("HALLMARK_FAULTS_COUNTS");
    if (counts_path != NULL) {
        size_t size = strlen(counts_path) + 32;

        counts_partial_path = malloc(size);
        if (counts_partial_path != NULL)
            snprintf(counts_partial_path, size, "%s.%ld.partial", counts_path,
                     (long)getpid());
    }

    path = nonempty_env("HALLMARK_FAULTS_MODULE");
    if (path == NULL)
        path = DEFAULT_REAL_MODULE;
    library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, LOG_PREFIX "cannot load the real module: %s\n",
                dlerror());
        return -1;
    }
    /* POSIX requires that dlsym's result converts to a function pointer. */
    get_list = (CK_C_GetFunctionList)dlsym(library, "C_GetFunctionList");
    if (get_list == NULL) {
        fprintf(stderr, LOG_PREFIX "%s has no C_GetFunctionList\n", path);
        return -1;
    }
    if (get_list(&real) != CKR_OK || real == NULL) {
        fprintf(stderr, LOG_PREFIX "C_GetFunctionList of %s failed\n", path);
        real = NULL;
        return -1;
    }
    return 0;
}

EXPORTED CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    struct action action;
    int loaded;

    pthread_mutex_lock(&state_lock);
    loaded = load_real_module();
    pthread_mutex_unlock(&state_lock);
    if (loaded != 0)
        return CKR_GENERAL_ERROR;
    if (apply_rules(FN_C_GetFunctionList, &action))
        return action.rv;
    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    *list = &wrapper_list;
    return CKR_OK;
}

static CK_RV wrap_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    return C_GetFunctionList(list);
}
