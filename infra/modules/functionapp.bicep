// The function app on the Flex Consumption plan (Linux, Python 3.11), running as the
// user-assigned identity, with identity-based connections only: no storage or Service Bus
// keys and no secret values in its settings.

@description('Name of the function app.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the plan and the app (one that offers Flex Consumption).')
param location string

@description('Tags for the plan and the app.')
param tags object = {}

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Storage account behind AzureWebJobsStorage.')
param storageAccountName string

@description('URL of the blob container holding the deployment package.')
param deploymentContainerUrl string

@description('Service Bus host name, e.g. sb-x.servicebus.windows.net.')
param serviceBusFullyQualifiedNamespace string

@description('Key Vault URI, e.g. https://kv-x.vault.azure.net/.')
param keyVaultUri string

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('The address Twilio and Slack call back (PUBLIC_BASE_URL), without a trailing slash.')
param publicBaseUrl string

@description('The connections and rules file, relative to the app root.')
param connectorConfigPath string

@description('Prefix of the app\'s table names.')
param storageTablePrefix string

@description('Seconds a secret value is cached before Key Vault is read again.')
param secretCacheTtlSeconds int

@description('Attempts per piece of queued work before it is dead-lettered.')
param queueMaxAttempts int
param retryMaxAgeSeconds int

@description('Memory of each instance, in MB.')
param instanceMemoryMB int

@description('Most instances the app scales out to.')
param maximumInstanceCount int

@description('Always-ready instances per scale group, e.g. [{name: \'http\', instanceCount: 1}].')
param alwaysReady array

@description('Concurrent HTTP requests per instance.')
param httpPerInstanceConcurrency int

@description('Threads of the Python worker that run the functions (PYTHON_THREADPOOL_THREAD_COUNT).')
param workerThreadCount int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Webhooks from Dynamics, Twilio and Slack arrive over the internet.
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      // On Flex Consumption the language and version live here, not in app settings.
      runtime: {
        name: 'python'
        version: '3.11'
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        // Default: one always-ready instance for the `http` group, so a webhook never waits on
        // a cold start. Slack drops an interaction that is not answered within 3 seconds, and
        // a cold Python start with the Azure SDKs can take longer than that.
        alwaysReady: alwaysReady
        // Flex sets per-instance concurrency per trigger only for HTTP. The Service Bus
        // triggers' concurrency comes from host.json (extensions.serviceBus.maxConcurrentCalls),
        // and each queue function scales on its own instances (per-function scaling).
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      // No FUNCTIONS_WORKER_RUNTIME or FUNCTIONS_EXTENSION_VERSION: Flex Consumption takes the
      // language from functionAppConfig.runtime and manages the host version itself. Both are on
      // its list of deprecated settings: FUNCTIONS_WORKER_RUNTIME is refused at deployment,
      // FUNCTIONS_EXTENSION_VERSION is overwritten by the platform; the same list holds
      // WEBSITE_RUN_FROM_PACKAGE, WEBSITE_CONTENTSHARE and SCM_DO_BUILD_DURING_DEPLOYMENT.
      appSettings: [
        // Host storage, identity-based: account name + the user-assigned identity.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // Queue triggers and the app's sender, identity-based.
        {
          name: 'ServiceBusConnection__fullyQualifiedNamespace'
          value: serviceBusFullyQualifiedNamespace
        }
        {
          name: 'ServiceBusConnection__credential'
          value: 'managedidentity'
        }
        {
          name: 'ServiceBusConnection__clientId'
          value: identityClientId
        }
        {
          name: 'QUEUE_BACKEND'
          value: 'servicebus'
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUri
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'PUBLIC_BASE_URL'
          value: publicBaseUrl
        }
        {
          name: 'CONNECTOR_CONFIG_PATH'
          value: connectorConfigPath
        }
        {
          name: 'STORAGE_TABLE_PREFIX'
          value: storageTablePrefix
        }
        {
          name: 'SECRET_CACHE_TTL_SECONDS'
          value: string(secretCacheTtlSeconds)
        }
        {
          name: 'QUEUE_MAX_ATTEMPTS'
          value: string(queueMaxAttempts)
        }
        // Transient failures are retried with backoff until the work is this old, then dead-lettered.
        {
          name: 'RETRY_MAX_AGE_SECONDS'
          value: string(retryMaxAgeSeconds)
        }
        {
          name: 'RETRY_BACKOFF_BASE_SECONDS'
          value: '2'
        }
        {
          name: 'RETRY_BACKOFF_CAP_SECONDS'
          value: '300'
        }
        // A crash that repeats is dead-lettered by the app itself on this delivery (audited),
        // below the queues' maxDeliveryCount, so the broker's own dead-lettering is the last resort.
        {
          name: 'QUEUE_MAX_DELIVERIES'
          value: '5'
        }
        // The routing stage sends a change's first notifications itself; 'false' routes every one through
        // the notifications queue, so that disabling that function pauses every send.
        {
          name: 'DELIVER_INLINE'
          value: 'true'
        }
        // The worker logs at Debug and leaves the filtering to the host: the libraries' request lines are
        // not even formatted below this level. 'INFO' shows every storage request while troubleshooting.
        {
          name: 'LIBRARY_LOG_LEVEL'
          value: 'WARNING'
        }
        // The functions are synchronous and run on the worker's thread pool: one thread per
        // concurrent HTTP request or Service Bus message (host.json maxConcurrentCalls).
        {
          name: 'PYTHON_THREADPOOL_THREAD_COUNT'
          value: string(workerThreadCount)
        }
        // Not a secret: it names the Application Insights component. Local authentication is
        // disabled there, so telemetry is accepted only with the identity's Entra ID token,
        // which the next setting tells the host and the app's log exporter to use. The app
        // exports its own log lines with their custom dimensions (shared/telemetry.py); it
        // configures the Azure Monitor distro itself, so PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY
        // (the worker configuring it too: every line twice) and PYTHON_ENABLE_OPENTELEMETRY stay unset.
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
      ]
    }
  }
}

// No publishing with user names and passwords: azd deploys with an Entra ID token.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
