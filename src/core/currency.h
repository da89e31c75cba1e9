/* currency: the codes of ISO 4217 list one (current currencies and funds, as
 * published in 2025) with their minor units.  Withdrawn codes are unknown. */
#ifndef CORE_CURRENCY_H
#define CORE_CURRENCY_H

#include <stddef.h>

#define CURRENCY_UNKNOWN (-1)     /* not a code of the current list */
#define CURRENCY_NO_MINOR_UNIT 99 /* listed with minor unit "N.A." (XAU, XDR...) */

/* Minor unit (count of decimal places, 0..4) of the code given in exactly
 * len bytes, upper case only; CURRENCY_NO_MINOR_UNIT when the list gives
 * none, CURRENCY_UNKNOWN when the code is not listed. */
int currency_minor_unit(const char *code, size_t len);

#endif
